"""Which attempt created which MLflow run: the only runs that attempt's token may write."""

from __future__ import annotations

from django.db import models

from controlplane.training.models import Job


class RunOwner(models.Model):
    """Recorded by the gate when it forwards an attempt's ``runs/create`` (trial runs of a sweep included)."""

    run_id = models.CharField(max_length=64, primary_key=True)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="+")
    attempt = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"run {self.run_id} of job {self.job_id} attempt {self.attempt}"
