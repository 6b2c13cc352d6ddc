"""Celery entry points on the workers: thin, each hands over to the runner."""

from __future__ import annotations

import logging
import os
from typing import Any

from workers.celery_app import app
from workers.controlplane_client import ControlPlaneClient
from workers.runner import job_run
from workers.spec import JobSpec

log = logging.getLogger(__name__)


@app.task(name="tuneyard.run_job", bind=True)
def run_job(self, spec: dict[str, Any]) -> str | None:  # type: ignore[no-untyped-def]
    job_spec = JobSpec.model_validate(spec)
    worker = os.environ.get("TUNEYARD_WORKER_NAME") or self.request.hostname or "worker"
    client = ControlPlaneClient.from_env()
    try:
        outcome = job_run(job_spec, client=client, worker=worker)
    finally:
        client.close()
    return outcome.value if outcome else None
