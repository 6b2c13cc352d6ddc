"""What workers report over the internal API (claims, heartbeats, results); the lost-attempt reconciler."""

from __future__ import annotations

import functools
import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlplane.errors import Conflict, NotFound
from controlplane.training import hooks
from controlplane.training.models import Job, JobLogLine, JobMetricPoint, JobStatus, Worker
from controlplane.training.services.dispatch import PAUSED_REASON, job_dispatch, job_spec_json
from controlplane.training.services.transitions import job_transition
from workers.spec import Heartbeat, HeartbeatReply, JobOutcome, JobResult, JobSpec, WorkerHeartbeat

log = logging.getLogger(__name__)

S = JobStatus


def job_claim(*, job_id: int, attempt: int, worker: str) -> JobSpec:
    """A worker takes a queued attempt. A second claim of the same attempt is a Conflict."""
    now = timezone.now()
    # Read once, before the transition: the attempt's spec was stored when it was
    # sent and cannot change while it waits, and the transition below is fenced
    # by status and attempt.
    job = Job.objects.select_related("project").filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"No job {job_id}.")
    if job.project.dispatch_paused_at is not None:
        # Still paused at the update: a resume committed since the read lets the claim go on.
        held = Job.objects.filter(
            pk=job_id, attempt=attempt, status=S.QUEUED, project__dispatch_paused_at__isnull=False
        )
        if held.update(dispatched_at=None, waiting_reason=PAUSED_REASON):
            # Sent before its project was paused: it waits, and is sent again on resume.
            raise Conflict(f"Job {job_id} is held: its project's dispatch is paused.")
    won = job_transition(
        job_id=job_id,
        attempt=attempt,
        to=S.RUNNING,
        actor_label=f"worker:{worker}",
        # What the attempt starts from, for the audit trail.
        message=f"resumes from the checkpoint at step {job.checkpoint_step}" if job.checkpoint_step else "",
        worker=worker,
        started_at=now,
        heartbeat_at=now,
    )
    if not won:
        raise Conflict(f"Job {job_id} attempt {attempt} is not waiting to be claimed.")
    return JobSpec.model_validate(job_spec_json(job))


def job_heartbeat(*, job_id: int, heartbeat: Heartbeat) -> HeartbeatReply:
    """Record progress; the reply tells the worker to stop when the job is being cancelled."""
    live = Job.objects.filter(
        pk=job_id,
        attempt=heartbeat.attempt,
        worker=heartbeat.worker,
        status__in=[S.RUNNING, S.CANCELLING],
    )
    fields: dict[str, Any] = {
        "progress": heartbeat.progress,
        "step": heartbeat.step,
        "total_steps": heartbeat.total_steps,
        "heartbeat_at": timezone.now(),
    }
    if heartbeat.mlflow_run_id:
        fields["mlflow_run_id"] = heartbeat.mlflow_run_id
    if heartbeat.gpu_indices:
        fields["gpu_indices"] = heartbeat.gpu_indices
    with transaction.atomic():
        if not live.update(**fields):
            return HeartbeatReply(stop=True, reason="this attempt no longer runs")
        if heartbeat.checkpoint is not None:
            # Only forward: a resent heartbeat must not put an older checkpoint back.
            live.filter(checkpoint_step__lt=heartbeat.checkpoint.step).update(
                checkpoint_step=heartbeat.checkpoint.step, checkpoint_uri=heartbeat.checkpoint.uri
            )
        JobMetricPoint.objects.bulk_create(
            [
                JobMetricPoint(job_id=job_id, attempt=heartbeat.attempt, name=name, step=step, value=value)
                for name, points in heartbeat.metrics.items()
                for step, value in points
            ],
            ignore_conflicts=True,  # a resent heartbeat repeats points; keep the first
        )
        JobLogLine.objects.bulk_create(
            [
                JobLogLine(job_id=job_id, attempt=heartbeat.attempt, text=line[:2000])
                for line in heartbeat.log_lines
            ]
        )
    status = Job.objects.filter(pk=job_id).values_list("status", flat=True).first()
    if status == S.CANCELLING:
        return HeartbeatReply(stop=True, reason="cancelled")
    # A sweep's trial: its pruner may stop it here.
    pruned = hooks.metrics_reported(job_id, heartbeat) if heartbeat.metrics else ""
    if pruned and job_transition(
        job_id=job_id, attempt=heartbeat.attempt, to=S.CANCELLING, actor_label="sweep", message=pruned
    ):
        return HeartbeatReply(stop=True, reason=pruned)
    return HeartbeatReply()


_OUTCOME_STATUS = {
    JobOutcome.SUCCEEDED: S.SUCCEEDED,
    JobOutcome.FAILED: S.FAILED,
    JobOutcome.CANCELLED: S.CANCELLED,
}


def job_finish(*, job_id: int, result: JobResult) -> Job:
    """Record an attempt's end. Reporting the same end twice is harmless.

    A retryable failure of a running attempt starts the next attempt instead
    (from the last checkpoint), up to JOB_MAX_ATTEMPTS.
    """
    if (
        result.outcome is JobOutcome.FAILED
        and result.retryable
        and result.attempt < settings.JOB_MAX_ATTEMPTS
    ):
        with transaction.atomic():
            if job_transition(
                job_id=job_id,
                attempt=result.attempt,
                to=S.QUEUED,
                actor_label=f"worker:{result.worker}",
                message=f"attempt {result.attempt} failed, trying again: {result.error}",
            ):
                transaction.on_commit(lambda: job_dispatch(job_id=job_id))
                return Job.objects.get(pk=job_id)
    to = _OUTCOME_STATUS[result.outcome]
    fields: dict[str, Any] = {
        "finished_at": timezone.now(),
        "metrics": result.metrics,
        "artifacts": result.artifacts,
        "error": result.error,
    }
    if result.mlflow_run_id:
        fields["mlflow_run_id"] = result.mlflow_run_id
    if to == S.SUCCEEDED:
        fields["progress"] = 1.0
    won = job_transition(
        job_id=job_id,
        attempt=result.attempt,
        to=to,
        actor_label=f"worker:{result.worker}",
        message=result.error,
        **fields,
    )
    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"No job {job_id}.")
    if not won and not (job.status == to and job.attempt == result.attempt):
        raise Conflict(f"Job {job_id} attempt {result.attempt} cannot end as {to} from {job.status}.")
    return job


def jobs_recover_lost() -> dict[str, int]:
    """Deal with attempts whose worker went silent: retry them, up to the attempt limit.

    A silent attempt may still be running on a worker cut off from us; the new
    attempt fences it (its heartbeats are told to stop, its result is refused).
    """
    cutoff = timezone.now() - timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT_SECONDS)
    silent = Job.objects.filter(status__in=[S.RUNNING, S.CANCELLING], heartbeat_at__lt=cutoff)
    counts = {"retried": 0, "failed": 0, "cancelled": 0}
    heard_lately = (
        Job.objects.filter(heartbeat_at__gte=cutoff).exists()
        or Worker.objects.filter(last_seen__gte=cutoff).exists()
    )
    if not heard_lately:
        # Every worker silent at once is far likelier a deaf control plane (a web
        # outage, a slow deploy) than every worker dying: retrying now would kill
        # attempts that are fine. Once any worker is heard again, the sweep runs.
        if silent.exists():
            log.warning(
                "no worker heard for %ss; silent jobs are not retried yet",
                settings.JOB_HEARTBEAT_TIMEOUT_SECONDS,
            )
        return counts
    for job_id, status, attempt in silent.values_list("pk", "status", "attempt"):
        silence = f"no heartbeat for {settings.JOB_HEARTBEAT_TIMEOUT_SECONDS}s from attempt {attempt}"
        extra: dict[str, Any]
        if status == S.CANCELLING:
            outcome, to, extra = "cancelled", S.CANCELLED, {"finished_at": timezone.now()}
        elif attempt < settings.JOB_MAX_ATTEMPTS:
            outcome, to, extra = "retried", S.QUEUED, {}
        else:
            outcome, to = "failed", S.FAILED
            extra = {
                "finished_at": timezone.now(),
                "error": f"lost: {silence}, the last of {settings.JOB_MAX_ATTEMPTS} attempts",
            }
        with transaction.atomic():
            if job_transition(
                job_id=job_id, attempt=attempt, to=to, actor_label="reconciler", message=silence, **extra
            ):
                counts[outcome] += 1
                if to == S.QUEUED:
                    # Bound now: a closure would see the loop's last job_id by the time it runs.
                    transaction.on_commit(functools.partial(job_dispatch, job_id=job_id))
    return counts


def worker_heartbeat_record(*, heartbeat: WorkerHeartbeat) -> Worker:
    """Remember what a worker says of itself; the newest heartbeat wins."""
    worker, _ = Worker.objects.update_or_create(
        name=heartbeat.name,
        defaults={
            "host": heartbeat.host,
            "queues": heartbeat.queues,
            "gpus": [gpu.model_dump() for gpu in heartbeat.gpus],
            "version": heartbeat.version,
            "running_job_ids": heartbeat.running_job_ids,
            "last_seen": timezone.now(),
        },
    )
    _gpu_idleness_record(heartbeat)
    hooks.worker_heartbeat(heartbeat)
    return worker


def _gpu_idleness_record(heartbeat: WorkerHeartbeat) -> None:
    """Start or stop the idle clock of each running job whose GPUs this worker measured."""
    utilization = {gpu.index: gpu.utilization_percent for gpu in heartbeat.gpus}
    jobs = Job.objects.filter(
        pk__in=heartbeat.running_job_ids, worker=heartbeat.name, status__in=[S.RUNNING, S.CANCELLING]
    ).exclude(gpu_indices=[])
    for job_id, indices in jobs.values_list("pk", "gpu_indices"):
        # Unknown utilization (None) is not idleness.
        idle = all(utilization.get(index) == 0 for index in indices)
        if idle:
            Job.objects.filter(pk=job_id, gpu_idle_since__isnull=True).update(gpu_idle_since=timezone.now())
        else:
            Job.objects.filter(pk=job_id).exclude(gpu_idle_since=None).update(gpu_idle_since=None)
