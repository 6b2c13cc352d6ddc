"""Reads of sweeps: lists, a sweep with its trials, the best trial, Optuna's charts."""

from __future__ import annotations

import json
from typing import cast

import optuna
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


def sweep_figures(*, sweep: Sweep) -> dict[str, dict]:
    """Optuna's own charts of the study, as Plotly figures (plain dicts) by name; a chart its
    trials cannot draw yet (too few finished, one parameter) is left out."""
    import optuna.visualization as vis  # plotly: loaded only when a page draws the charts

    study = study_load(sweep) if sweep.backend == Backend.OPTUNA else _ray_study(sweep)
    if not any(t.state.is_finished() for t in study.get_trials(deepcopy=False)):
        return {}
    charts = {
        "history": vis.plot_optimization_history,
        "intermediate": vis.plot_intermediate_values,
        "parallel": vis.plot_parallel_coordinate,
        "importance": vis.plot_param_importances,
    }
    figures = {}
    for name, plot in charts.items():
        try:
            figures[name] = json.loads(plot(study).to_json())
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # e.g. importances need two finished trials with different parameters
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
