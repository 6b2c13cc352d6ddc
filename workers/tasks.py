"""Celery entry points on the workers: thin, each hands over to the runner."""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

from celery import Task
from celery.exceptions import Reject
from celery.signals import worker_ready, worker_shutdown

from workers import presence
from workers.celery_app import app
from workers.controlplane_client import ControlPlaneClient
from workers.runner import NoFreeGpu, job_run
from workers.spec import JobSpec

log = logging.getLogger(__name__)
_presence_stop = None


@functools.cache
def _control_plane() -> ControlPlaneClient:
    # One client for the process's life: building one (its TLS context) costs
    # ~50 ms, which would be most of a job's dispatch latency.
    return ControlPlaneClient.from_env()


def _worker_name(hostname: str | None) -> str:
    return os.environ.get("TUNEYARD_WORKER_NAME") or hostname or "worker"


@worker_ready.connect
def _presence_begin(sender: Any = None, **kwargs: Any) -> None:
    global _presence_stop
    queues = sorted(queue.name for queue in sender.task_consumer.queues)
    _presence_stop = presence.presence_start(_worker_name(sender.hostname), queues)


@worker_shutdown.connect
def _presence_end(**kwargs: Any) -> None:
    if _presence_stop is not None:
        _presence_stop.set()


@app.task(name="tuneyard.run_job", bind=True)
def run_job(self: Task, spec: dict[str, Any]) -> str | None:
    job_spec = JobSpec.model_validate(spec)
    try:
        outcome = job_run(job_spec, client=_control_plane(), worker=_worker_name(self.request.hostname))
    except NoFreeGpu as exc:
        # Back to the queue, where a host with free GPUs (or this one, later) takes it.
        raise Reject(str(exc), requeue=True) from exc
    return outcome.value if outcome else None
