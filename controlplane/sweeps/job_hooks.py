"""What sweeps do when the jobs they own report: registered with training's hooks by ``SweepsConfig``.

A sweep owns two kinds of job: an Optuna sweep's trials (finetunes with a
``Trial`` row) and a Ray sweep's driver (a ``sweep-driver`` job). Each
listener returns at once for a job no sweep owns.
"""

from __future__ import annotations

from typing import Any

from controlplane.sweeps import raysweeps, services
from controlplane.sweeps.models import Sweep, Trial
from controlplane.training import hooks
from controlplane.training.models import Job, JobKind
from workers.spec import Heartbeat


def job_finished(job_id: int) -> None:
    """A trial's study learns its outcome; a Ray driver's sweep ends with it."""
    services.trial_finish(job_id=job_id)
    raysweeps.driver_finish(job_id=job_id)


def metrics_reported(job_id: int, heartbeat: Heartbeat) -> str:
    """A trial's intermediate metric feeds its sweep's pruner; the reason to stop it, or ""."""
    metric = Trial.objects.filter(job_id=job_id).values_list("sweep__intermediate_metric", flat=True).first()
    if metric is None or metric not in heartbeat.metrics:
        return ""
    return services.trial_report(
        job_id=job_id,
        points=heartbeat.metrics[metric],
        step=heartbeat.step,
        total_steps=heartbeat.total_steps,
    )


def retry_refusal(job: Job) -> str:
    if job.kind == JobKind.SWEEP_DRIVER:
        sweep_id = Sweep.objects.filter(driver_job=job).values_list("pk", flat=True).first()
        return f"Job {job.pk} drives sweep {sweep_id}; start a new sweep instead."
    sweep_id = Trial.objects.filter(job=job).values_list("sweep_id", flat=True).first()
    if sweep_id is not None:
        return f"Job {job.pk} is a trial of sweep {sweep_id}; rerun failed trials there."
    return ""


def driver_spec_fields(job: Job) -> dict[str, Any]:
    return {"sweep": raysweeps.driver_spec(job=job)}


def register() -> None:
    hooks.on_job_finished(job_finished)
    hooks.on_metrics_reported(metrics_reported)
    hooks.on_retry(retry_refusal)
    hooks.spec_fields_for(JobKind.SWEEP_DRIVER, driver_spec_fields)
