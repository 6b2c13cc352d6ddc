from __future__ import annotations

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
