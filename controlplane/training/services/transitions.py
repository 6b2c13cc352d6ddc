"""The job state machine: ``job_transition`` is the only code that changes a job's status."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from controlplane.accounts.models import User
from controlplane.training import hooks
from controlplane.training.models import Job, JobEvent, JobStatus
from controlplane.training.services.dispatch import jobs_schedule
from controlplane.training.services.summaries import job_metric_summary_write

S = JobStatus
# The legal moves. Anything else is refused, so a late or repeated event can
# never move a job backwards.
# A move back to QUEUED always starts a new attempt (see job_transition).
TRANSITIONS: dict[JobStatus, set[JobStatus]] = {
    S.QUEUED: {S.RUNNING, S.CANCELLED},
    S.RUNNING: {S.SUCCEEDED, S.FAILED, S.CANCELLING, S.QUEUED},
    S.CANCELLING: {S.CANCELLED, S.SUCCEEDED, S.FAILED},
    S.SUCCEEDED: set(),
    S.FAILED: {S.QUEUED},
    S.CANCELLED: {S.QUEUED},
}


def _fresh_attempt_fields(attempt: int) -> dict[str, Any]:
    """What a new attempt starts from: nothing of the last one but its history."""
    return {
        "attempt": attempt + 1,
        "worker": "",
        "progress": 0.0,
        "step": 0,
        "total_steps": 0,
        "mlflow_run_id": "",
        "metrics": {},
        "artifacts": {},
        "error": "",
        "dispatched_at": None,
        "published_at": None,
        "broker_epoch": "",
        "started_at": None,
        "heartbeat_at": None,
        "finished_at": None,
        "spec": {},
    }


def job_transition(
    *,
    job_id: int,
    attempt: int,
    to: JobStatus,
    actor: User | None = None,
    actor_label: str = "",
    message: str = "",
    **fields: Any,
) -> bool:
    """Move a job to ``to`` if that is legal from its current status; return whether we won.

    The update is conditional on the status and attempt we read, so of two
    writers racing (two workers claiming, a cancel against a finish) exactly
    one wins and the other gets False. The audit row is written in the same
    transaction as the change. Moving to QUEUED starts attempt ``attempt + 1``:
    events of the old attempt are then refused, which fences a worker that was
    only presumed lost.
    """
    current = (
        Job.objects.filter(pk=job_id)
        .values_list("status", "attempt", "started_at", "gpus", "project_id")
        .first()
    )
    if current is None:
        return False
    status, current_attempt, started_at, gpus, project_id = JobStatus(current[0]), *current[1:]
    if current_attempt != attempt or to not in TRANSITIONS[status]:
        return False
    live = (S.RUNNING, S.CANCELLING)
    if status in live and to not in live and started_at is not None:
        # The attempt stops running here: account its time (GPU-hours are gpus x run time).
        fields["run_seconds"] = F("run_seconds") + (timezone.now() - started_at).total_seconds()
    if to == S.QUEUED:
        fields |= _fresh_attempt_fields(attempt)
    with transaction.atomic():
        won = Job.objects.filter(pk=job_id, status=status, attempt=attempt).update(status=to, **fields)
        if not won:
            return False
        JobEvent.objects.create(
            job_id=job_id,
            actor=actor,
            actor_label=actor_label,
            attempt=fields.get("attempt", attempt),
            from_status=status,
            to_status=to,
            message=message[:5000],
        )
        if to.is_finished() or to == S.QUEUED:
            # The runs table sorts by final metrics: kept with the row, in this transaction.
            job_metric_summary_write(job_id=job_id)
        if gpus and (to.is_finished() or to == S.QUEUED):
            # GPUs (or a reservation) were freed: jobs waiting for the quota may go now.
            transaction.on_commit(lambda: jobs_schedule(project_id=project_id))
        if to.is_finished():
            # Whoever owns the job (a sweep, for its trials and its driver) hears of its end.
            transaction.on_commit(lambda: hooks.job_finished(job_id))
    return True
