from __future__ import annotations

from django.db.models import QuerySet

from controlplane.accounts.models import Project, Role
from controlplane.accounts.selectors import project_role_check
from controlplane.errors import NotFound
from controlplane.training.models import BaseModel, Job


def job_list(*, project: Project) -> QuerySet[Job]:
    return Job.objects.filter(project=project).select_related(
        "created_by", "base_model", "dataset_version__dataset"
    )


def job_get(*, user, job_id: int, role: Role = Role.VIEWER) -> Job:
    job = (
        Job.objects.select_related("project", "created_by", "base_model", "dataset_version__dataset")
        .filter(pk=job_id)
        .first()
    )
    if job is None:
        raise NotFound("No such job.")
    project_role_check(user=user, project=job.project, role=role)
    return job


def job_metric_series(*, job: Job) -> dict[str, dict[str, list[float]]]:
    """Each metric of the job's current attempt as {"steps": [...], "values": [...]}, for charts."""
    series: dict[str, dict[str, list[float]]] = {}
    points = job.metric_points.filter(attempt=job.attempt).values_list("name", "step", "value")
    for name, step, value in points.order_by("name", "step"):
        entry = series.setdefault(name, {"steps": [], "values": []})
        entry["steps"].append(step)
        entry["values"].append(value)
    return series


def job_log_tail(*, job: Job, limit: int = 200) -> list[str]:
    lines = job.log_lines.filter(attempt=job.attempt).order_by("-pk").values_list("text", flat=True)
    return list(reversed(lines[:limit]))


def job_log_page(*, job: Job, attempt: int, after: int = 0, limit: int = 1000) -> list[tuple[int, str]]:
    """Log lines of one attempt after the cursor ``after`` (a line id), oldest first."""
    lines = job.log_lines.filter(attempt=attempt, pk__gt=after).order_by("pk")
    return list(lines.values_list("pk", "text")[:limit])


def base_model_list(*, project: Project) -> QuerySet[BaseModel]:
    return BaseModel.objects.filter(project=project)
