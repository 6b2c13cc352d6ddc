"""The seam through which higher apps hear of jobs, so that training never imports them.

An app above training (sweeps, for one) registers its callables here from its
``AppConfig.ready()``; training calls whatever is registered, knowing nothing
of who listens. Each hook's rules are in its docstring. Listeners must be
cheap for the jobs they do not own: they run for every job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controlplane.training.models import Job
from workers.spec import Heartbeat, JobKind, WorkerHeartbeat

# Called on commit of the transaction that moved the job to a final status, with
# the job's id. Also called again by reconcilers, so a listener must be idempotent.
JobFinished = Callable[[int], None]
# A heartbeat's metrics arrived for a running attempt: (job id, heartbeat). The
# answer is a reason to stop the attempt now (a sweep's pruner), or "".
MetricsReported = Callable[[int, Heartbeat], str]
# A worker's own heartbeat was recorded (its Worker row is current): e.g. the
# dashboards add its GPUs' use to their hourly totals. Called in the request.
WorkerHeartbeatRecorded = Callable[[WorkerHeartbeat], None]
# Why a person may not retry this job by hand (it belongs to a sweep), or "".
RetryRefusal = Callable[[Job], str]
# The JobSpec fields only a job's owner knows, for the job kinds it owns.
SpecFields = Callable[[Job], dict[str, Any]]

_job_finished: list[JobFinished] = []
_metrics_reported: list[MetricsReported] = []
_retry_refusals: list[RetryRefusal] = []
_worker_heartbeats: list[WorkerHeartbeatRecorded] = []
_spec_fields: dict[JobKind, SpecFields] = {}


def on_job_finished(listener: JobFinished) -> None:
    if listener not in _job_finished:
        _job_finished.append(listener)


def on_metrics_reported(listener: MetricsReported) -> None:
    if listener not in _metrics_reported:
        _metrics_reported.append(listener)


def on_worker_heartbeat(listener: WorkerHeartbeatRecorded) -> None:
    if listener not in _worker_heartbeats:
        _worker_heartbeats.append(listener)


def on_retry(refusal: RetryRefusal) -> None:
    if refusal not in _retry_refusals:
        _retry_refusals.append(refusal)


def spec_fields_for(kind: JobKind, build: SpecFields) -> None:
    """``build(job)`` gives the extra JobSpec fields of every job of ``kind``; one owner per kind."""
    owner = _spec_fields.setdefault(kind, build)
    if owner is not build:
        raise RuntimeError(f"job kind {kind} already has its spec fields from {owner.__qualname__}")


def job_finished(job_id: int) -> None:
    for listener in _job_finished:
        listener(job_id)


def metrics_reported(job_id: int, heartbeat: Heartbeat) -> str:
    """The first reason a listener gives to stop the attempt, or ""."""
    for listener in _metrics_reported:
        reason = listener(job_id, heartbeat)
        if reason:
            return reason
    return ""


def worker_heartbeat(heartbeat: WorkerHeartbeat) -> None:
    for listener in _worker_heartbeats:
        listener(heartbeat)


def retry_refusal(job: Job) -> str:
    for refusal in _retry_refusals:
        reason = refusal(job)
        if reason:
            return reason
    return ""


def spec_fields(job: Job) -> dict[str, Any]:
    build = _spec_fields.get(JobKind(job.kind))
    if build is None:
        raise RuntimeError(f"no app provides the spec of a {job.kind} job; is it in INSTALLED_APPS?")
    return build(job)


def spec_kind_owned(kind: JobKind) -> bool:
    return kind in _spec_fields
