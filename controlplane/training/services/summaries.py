"""The runs table's summaries of a job: its final metrics and numeric hyperparameters as indexed rows.

They are derived from the job (Job.metrics, Job.config) and written in the
same transaction as what they derive from, so a sort by a metric never sees a
job whose row says otherwise.
"""

from __future__ import annotations

import math

from controlplane.training.models import Job, JobMetricValue, JobParam, numeric_params


def job_param_summary_write(*, job: Job) -> None:
    """JobParam rows of a new job (its config does not change afterwards)."""
    JobParam.objects.bulk_create(
        [
            JobParam(job=job, project_id=job.project_id, name=name, value=value)
            for name, value in numeric_params(job.config).items()
        ]
    )


def job_metric_summary_write(*, job_id: int) -> None:
    """Replace a job's JobMetricValue rows with what its current attempt's Job.metrics holds.

    Called inside job_transition's transaction when a job finishes or starts a
    new attempt (whose metrics start empty).
    """
    row = Job.objects.filter(pk=job_id).values_list("project_id", "metrics").first()
    JobMetricValue.objects.filter(job_id=job_id).delete()
    if row is None:
        return
    project_id, metrics = row
    JobMetricValue.objects.bulk_create(
        [
            JobMetricValue(job_id=job_id, project_id=project_id, name=name[:100], value=value)
            for name, value in (metrics or {}).items()
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        ]
    )
