from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Count, F, FloatField, Q, QuerySet, Sum
from django.utils import timezone

from controlplane.accounts.models import Project, Role
from controlplane.accounts.selectors import project_list, project_role_check
from controlplane.errors import NotFound
from controlplane.training.models import BaseModel, Job, JobStatus, Worker


def job_list(*, project: Project) -> QuerySet[Job]:
    return Job.objects.filter(project=project).select_related(
        "project", "created_by", "base_model", "dataset_version__dataset"
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


def job_queue_position(*, job: Job) -> int | None:
    """1 for the next queued job of its queue to go; None once it is claimed."""
    if job.status != JobStatus.QUEUED:
        return None
    ahead = Job.objects.filter(status=JobStatus.QUEUED, queue=job.queue).filter(
        Q(priority__gt=job.priority) | Q(priority=job.priority, created_at__lt=job.created_at)
    )
    return ahead.count() + 1


def job_start_estimate(*, job: Job, position: int | None) -> timedelta | None:
    """When a queued job may start, from the progress of the jobs it waits behind.

    Each running job of the same queue (of the same project, when the job
    waits for its project's quota) is expected to need as long again as its
    elapsed time scaled by what is left, (1 - p) / p. The job at position N
    starts when the N-th of them ends. None when nothing running says enough.
    """
    if position is None:
        return None
    running = Job.objects.filter(
        status=JobStatus.RUNNING, queue=job.queue, progress__gt=0, started_at__isnull=False
    )
    if job.waiting_reason:
        running = running.filter(project=job.project)
    now = timezone.now()
    remaining = sorted(
        (now - started) * ((1 - progress) / progress)
        for started, progress in running.values_list("started_at", "progress")
    )
    if len(remaining) < position:
        return None
    return remaining[position - 1]


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
    return BaseModel.objects.filter(project=project).select_related("project")


def worker_list(*, user) -> list[dict]:
    """Every worker, with the running jobs this user may see (others are only counted)."""
    offline_after = timezone.now() - timedelta(seconds=settings.WORKER_OFFLINE_AFTER_SECONDS)
    workers = list(Worker.objects.all())
    running = {job_id for worker in workers for job_id in worker.running_job_ids}
    jobs = Job.objects.filter(pk__in=running, project__in=project_list(user=user)).select_related("project")
    visible = {job.pk: job for job in jobs}
    return [
        {
            "worker": worker,
            "online": worker.last_seen >= offline_after,
            "jobs": [visible[i] for i in worker.running_job_ids if i in visible],
            "hidden_jobs": sum(1 for i in worker.running_job_ids if i not in visible),
        }
        for worker in workers
    ]


def usage_by_user(*, project: Project, days: int) -> list[dict]:
    """Jobs, run-hours and GPU-hours per person in the last ``days`` days, largest first."""
    since = timezone.now() - timedelta(days=days)
    rows = (
        Job.objects.filter(project=project, created_at__gte=since)
        .values("created_by__username")
        .annotate(
            jobs=Count("pk"),
            total_run_seconds=Sum("run_seconds"),
            total_gpu_seconds=Sum(F("gpus") * F("run_seconds"), output_field=FloatField()),
        )
        .order_by("-total_gpu_seconds", "-total_run_seconds", "created_by__username")
    )
    return [
        {
            "user": row["created_by__username"],
            "jobs": row["jobs"],
            "run_hours": round((row["total_run_seconds"] or 0) / 3600, 4),
            "gpu_hours": round((row["total_gpu_seconds"] or 0) / 3600, 4),
        }
        for row in rows
    ]
