"""Backfill the runs table's summaries (final metrics, numeric hyperparameters) of existing jobs."""

from __future__ import annotations

import math

from django.db import migrations

from controlplane.training.models import numeric_params

BATCH = 1000


def _summaries_write(apps, schema_editor):
    Job = apps.get_model("training", "Job")
    JobMetricValue = apps.get_model("training", "JobMetricValue")
    JobParam = apps.get_model("training", "JobParam")
    last = 0
    while True:
        batch = list(
            Job.objects.filter(pk__gt=last)
            .order_by("pk")
            .values("pk", "project_id", "metrics", "config")[:BATCH]
        )
        if not batch:
            return
        metric_rows, param_rows = [], []
        for job in batch:
            for name, value in (job["metrics"] or {}).items():
                if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                    metric_rows.append(
                        JobMetricValue(
                            job_id=job["pk"], project_id=job["project_id"], name=name[:100], value=value
                        )
                    )
            for name, value in numeric_params(job["config"] or {}).items():
                param_rows.append(
                    JobParam(job_id=job["pk"], project_id=job["project_id"], name=name, value=value)
                )
        JobMetricValue.objects.bulk_create(metric_rows, ignore_conflicts=True)
        JobParam.objects.bulk_create(param_rows, ignore_conflicts=True)
        last = batch[-1]["pk"]


class Migration(migrations.Migration):
    dependencies = [("training", "0012_runs_table")]

    operations = [migrations.RunPython(_summaries_write, migrations.RunPython.noop)]
