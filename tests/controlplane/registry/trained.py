"""A succeeded finetune whose adapter really is in MLflow: what the registry's tests register."""

from __future__ import annotations

import uuid
from pathlib import Path

from controlplane import tracking
from controlplane.training.models import Job
from controlplane.training.services import job_claim, job_finish
from tests.factories import job_make
from workers.spec import JobOutcome, JobResult


def trained_job_make(project, user, tmp_path: Path) -> Job:
    adapter = tmp_path / uuid.uuid4().hex / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    uri = tracking.artifact_upload(
        adapter, experiment="tests/jobs", run_name="job", artifact_path="adapter", tags={}
    )
    job = job_make(project, user)
    job_claim(job_id=job.pk, attempt=1, worker="w1")
    job_finish(
        job_id=job.pk,
        result=JobResult(
            attempt=1,
            worker="w1",
            outcome=JobOutcome.SUCCEEDED,
            artifacts={"adapter": uri},
            mlflow_run_id=uri.split("/")[1],
        ),
    )
    job.refresh_from_db()
    return job
