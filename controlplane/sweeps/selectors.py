"""Reads of sweeps: lists, a sweep with its trials, the best trial, Optuna's charts."""

from __future__ import annotations

import hashlib
import json
from typing import cast

import optuna
from django.core.cache import cache
from django.db.models import QuerySet

from controlplane.accounts.models import Project, Role, User
from controlplane.accounts.selectors import project_role_check
from controlplane.errors import NotFound
from controlplane.sweeps.models import Backend, Direction, Sweep, Trial, TrialState
from controlplane.sweeps.space import CategoricalParam, FloatParam, SearchSpace
from controlplane.sweeps.studies import study_load
from workers.spec import SweepDirection


def sweep_list(*, project: Project) -> QuerySet[Sweep]:
    return Sweep.objects.filter(project=project).select_related("project", "created_by")


def sweep_get(*, user: User, sweep_id: int, role: Role = Role.VIEWER) -> Sweep:
    sweep = Sweep.objects.select_related("project", "created_by").filter(pk=sweep_id).first()
    if sweep is None:
        raise NotFound("Not found.")
    project_role_check(user=user, project=sweep.project, role=role)
    return sweep


def sweep_trials(*, sweep: Sweep) -> QuerySet[Trial]:
    return sweep.trials.select_related("job").order_by("number")


def sweep_best_trial(*, sweep: Sweep) -> Trial | None:
    order = "value" if sweep.direction == Direction.MINIMIZE else "-value"
    return (
        sweep.trials.filter(state=TrialState.COMPLETE).select_related("job").order_by(order, "number").first()
    )


def sweep_best_job_ids(*, sweep: Sweep, limit: int) -> list[int]:
    """The jobs of the sweep's best complete trials by its objective, best first (for comparing)."""
    order = "value" if sweep.direction == Direction.MINIMIZE else "-value"
    trials = sweep.trials.filter(state=TrialState.COMPLETE, job__isnull=False).order_by(order, "number")
    return [job_id for job_id in trials.values_list("job_id", flat=True)[:limit] if job_id is not None]


FIGURES_CACHE_SECONDS = 600

# The charts of a sweep's page, in the order shown, with what each shows.
CHARTS = [
    ("history", "Optimization history"),
    ("intermediate", "Intermediate values"),
    ("parallel", "Parallel coordinates"),
    ("importance", "Parameter importances"),
]


def sweep_figures(*, sweep: Sweep) -> dict[str, dict]:
    """Optuna's own charts of the study, as Plotly figures (plain dicts) by name; a chart its
    trials cannot draw yet (too few finished, one parameter) is left out."""
    import optuna.visualization as vis  # plotly: loaded only when a page draws the charts
    from optuna.importance import FanovaImportanceEvaluator

    study = study_load(sweep) if sweep.backend == Backend.OPTUNA else _ray_study(sweep)
    trials = study.get_trials(deepcopy=False)
    if not any(t.state.is_finished() for t in trials):
        return {}
    # Drawing the charts (importances fit a random forest) costs far more than reading the trials,
    # and a running sweep's page asks every few seconds: the same trials get the same figures back.
    seen = [
        (t.number, t.state.name, t.values, len(t.intermediate_values), sorted(t.params.items()))
        for t in trials
    ]
    key = f"sweep-figures:{sweep.study_name}:{sweep.seed}:{hashlib.sha256(repr(seen).encode()).hexdigest()}"
    cached = cache.get(key)
    if cached is not None:
        return cached
    charts = {
        "history": vis.plot_optimization_history,
        "intermediate": vis.plot_intermediate_values,
        "parallel": vis.plot_parallel_coordinate,
        # Seeded: the same trials give the same bars at every refresh, so the page redraws
        # this chart only when a trial ends, not at random.
        "importance": lambda study: vis.plot_param_importances(
            study, evaluator=FanovaImportanceEvaluator(seed=sweep.seed)
        ),
    }
    figures = {}
    for name, plot in charts.items():
        try:
            figures[name] = json.loads(plot(study).to_json())
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # e.g. importances need two finished trials with different parameters
    cache.set(key, figures, timeout=FIGURES_CACHE_SECONDS)
    return figures


def _ray_study(sweep: Sweep) -> optuna.Study:
    """A Ray sweep's ended trials as an in-memory Optuna study, so Optuna draws the same charts.

    Built from our rows at each call: the rows are the truth, and a sweep has few trials.
    """
    space = SearchSpace.model_validate(sweep.search_space).root
    distributions: dict[str, optuna.distributions.BaseDistribution] = {}
    for path, param in space.items():
        if isinstance(param, CategoricalParam):
            distributions[path] = optuna.distributions.CategoricalDistribution(param.choices)
        elif isinstance(param, FloatParam):
            distributions[path] = optuna.distributions.FloatDistribution(param.low, param.high, log=param.log)
        else:
            distributions[path] = optuna.distributions.IntDistribution(
                param.low, param.high, log=param.log, step=param.step
            )
    states = {
        TrialState.COMPLETE: optuna.trial.TrialState.COMPLETE,
        TrialState.PRUNED: optuna.trial.TrialState.PRUNED,
        TrialState.FAILED: optuna.trial.TrialState.FAIL,
    }
    # A Direction's values are Optuna's words.
    study = optuna.create_study(direction=cast(SweepDirection, sweep.direction))
    for trial in sweep.trials.exclude(state=TrialState.RUNNING).order_by("number"):
        try:
            frozen = optuna.trial.create_trial(
                state=states[TrialState(trial.state)],
                value=trial.value if trial.state == TrialState.COMPLETE else None,
                params=trial.params,
                distributions={path: distributions[path] for path in trial.params if path in distributions},
                intermediate_values={int(step): value for step, value in trial.intermediate_values},
            )
        except ValueError:
            continue  # a value outside its distribution: no point in the charts
        study.add_trial(frozen)
    return study
