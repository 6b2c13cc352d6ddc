"""Writes of the dashboards' pre-aggregates, each from one of training's hooks (see apps.py).

Both listeners run for every heartbeat and every finished job, so each costs a
couple of small queries and is safe to run twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from controlplane.dashboards.models import UNKNOWN_GPU, FinishedJob, WorkerHour
from controlplane.training.models import Job, JobStatus, Worker
from workers.spec import WorkerHeartbeat

FAILURE_REASON_CHARS = 200


@dataclass(frozen=True)
class UsageIncrement:
    """What one heartbeat adds to its worker's hour."""

    gpu_seconds: float = 0.0
    busy_gpu_seconds: float = 0.0
    idle_gpu_seconds: float = 0.0
    utilization_seconds: float = 0.0


def usage_increment(utilizations: Iterable[int | None], seconds: float) -> UsageIncrement:
    """The GPU time ``seconds`` of a worker whose GPUs report these utilizations (None: unknown).

    An unknown utilization counts as GPU time, neither busy nor idle: guessing either
    would make waste up or hide it.
    """
    gpu = busy = idle = weighted = 0.0
    for utilization in utilizations:
        gpu += seconds
        if utilization is None:
            continue
        if utilization > 0:
            busy += seconds
            weighted += utilization * seconds
        else:
            idle += seconds
    return UsageIncrement(gpu, busy, idle, weighted)


def hour_of(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def sample_seconds(previous: datetime | None, at: datetime) -> float:
    """The time a heartbeat at ``at`` stands for, after the worker's previous one.

    A first heartbeat only starts the clock; a gap longer than a worker takes to be
    shown offline is an outage, whose GPUs nobody saw, so it counts for nothing.
    """
    if previous is None:
        return 0.0
    seconds = (at - previous).total_seconds()
    if seconds <= 0 or seconds > settings.WORKER_OFFLINE_AFTER_SECONDS:
        return 0.0
    return seconds


def worker_usage_record(*, heartbeat: WorkerHeartbeat, at: datetime | None = None) -> WorkerHour:
    """Add one worker heartbeat to the worker's row of the current hour (the heartbeat hook)."""
    at = at or timezone.now()
    previous = (
        WorkerHour.objects.filter(worker=heartbeat.name)
        .order_by("-hour")
        .values_list("last_sample_at", flat=True)
        .first()
    )
    increment = usage_increment(
        [gpu.utilization_percent for gpu in heartbeat.gpus], sample_seconds(previous, at)
    )
    hour = hour_of(at)
    fields = {
        "samples": F("samples") + 1,
        "gpu_seconds": F("gpu_seconds") + increment.gpu_seconds,
        "busy_gpu_seconds": F("busy_gpu_seconds") + increment.busy_gpu_seconds,
        "idle_gpu_seconds": F("idle_gpu_seconds") + increment.idle_gpu_seconds,
        "utilization_seconds": F("utilization_seconds") + increment.utilization_seconds,
        "last_sample_at": at,
    }
    # An increment, not a read-modify-write: two heartbeats at once both count.
    if not WorkerHour.objects.filter(worker=heartbeat.name, hour=hour).update(**fields):
        try:
            with transaction.atomic():
                return WorkerHour.objects.create(
                    worker=heartbeat.name,
                    hour=hour,
                    samples=1,
                    last_sample_at=at,
                    **vars(increment),
                )
        except IntegrityError:  # another heartbeat of this worker made the hour's row first
            WorkerHour.objects.filter(worker=heartbeat.name, hour=hour).update(**fields)
    return WorkerHour.objects.get(worker=heartbeat.name, hour=hour)


def worker_heartbeat_heard(heartbeat: WorkerHeartbeat) -> None:
    worker_usage_record(heartbeat=heartbeat)


def worker_hours_bulk_create(*, rows: Iterable[WorkerHour], batch_size: int = 2000) -> int:
    """Insert whole hours at once (a backfill, the benchmark's 90 days); existing hours are kept."""
    created = WorkerHour.objects.bulk_create(rows, batch_size=batch_size, ignore_conflicts=True)
    return len(created)


def job_gpu_model(job: Job, worker_gpus: list[dict] | None) -> str:
    """The model of the GPUs the job held, as its worker last reported them."""
    if not job.gpus or not worker_gpus:
        return UNKNOWN_GPU
    held = set(job.gpu_indices or [])
    names = [gpu.get("name") for gpu in worker_gpus if not held or gpu.get("index") in held]
    return next((str(name)[:200] for name in names if name), UNKNOWN_GPU)


def failure_reason(error: str) -> str:
    first = next((line.strip() for line in error.splitlines() if line.strip()), "")
    return first[:FAILURE_REASON_CHARS]


def finished_job_build(job: Job, *, worker_gpus: list[dict] | None) -> FinishedJob:
    started = job.started_at
    return FinishedJob(
        job_id=job.pk,
        project_id=job.project_id,
        created_by_id=job.created_by_id,
        kind=job.kind,
        status=job.status,
        created_at=job.created_at,
        started_at=started,
        finished_at=job.finished_at or timezone.now(),
        wait_seconds=max((started - job.created_at).total_seconds(), 0.0) if started else None,
        gpus=job.gpus,
        run_seconds=job.run_seconds,
        gpu_hours=job.gpu_hours,
        gpu_model=job_gpu_model(job, worker_gpus),
        failure_reason=failure_reason(job.error) if job.status == JobStatus.FAILED else "",
    )


def finished_job_record(job_id: int) -> FinishedJob | None:
    """Count a job that reached a final status (the job-finished hook); again is harmless."""
    job = Job.objects.filter(pk=job_id).first()
    if job is None or not job.is_finished:
        return None
    worker_gpus = (
        Worker.objects.filter(name=job.worker).values_list("gpus", flat=True).first() if job.worker else None
    )
    row = finished_job_build(job, worker_gpus=worker_gpus)
    fields = {
        f.attname: getattr(row, f.attname) for f in FinishedJob._meta.concrete_fields if not f.primary_key
    }
    finished, _ = FinishedJob.objects.update_or_create(job_id=job_id, defaults=fields)
    return finished


def job_finished_heard(job_id: int) -> None:
    finished_job_record(job_id)


def finished_jobs_backfill(*, since: datetime | None = None) -> int:
    """Count the finished jobs no listener saw (those before this app, or lost on a crash)."""
    jobs = Job.objects.filter(status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED])
    if since is not None:
        jobs = jobs.filter(finished_at__gte=since)
    jobs = jobs.exclude(pk__in=FinishedJob.objects.values("job_id"))
    workers = dict(Worker.objects.values_list("name", "gpus"))
    created = 0
    batch: list[FinishedJob] = []
    for job in jobs.iterator(chunk_size=2000):
        batch.append(finished_job_build(job, worker_gpus=workers.get(job.worker)))
        if len(batch) >= 2000:
            created += len(FinishedJob.objects.bulk_create(batch, ignore_conflicts=True))
            batch = []
    if batch:
        created += len(FinishedJob.objects.bulk_create(batch, ignore_conflicts=True))
    return created
