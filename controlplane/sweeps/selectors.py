from __future__ import annotations

import json

from django.db.models import QuerySet

from controlplane.accounts.models import Project, Role
from controlplane.accounts.selectors import project_role_check
from controlplane.errors import NotFound
from controlplane.sweeps.models import Direction, Sweep, Trial, TrialState


def sweep_list(*, project: Project) -> QuerySet[Sweep]:
    return Sweep.objects.filter(project=project).select_related("project", "created_by")


def sweep_get(*, user, sweep_id: int, role: Role = Role.VIEWER) -> Sweep:
    sweep = Sweep.objects.select_related("project", "created_by").filter(pk=sweep_id).first()
    if sweep is None:
        raise NotFound("No such sweep.")
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
    import optuna.visualization as vis

    from controlplane.sweeps.services import study_load

    study = study_load(sweep)
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
