"""What the dashboards read instead of scanning raw history: prices, finished jobs, worker-hours.

Each row is written by a listener on one of training's hooks (see ``services``),
so the pages aggregate a few thousand small rows at most, never 90 days of
heartbeats.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models

from controlplane.accounts.models import Project
from controlplane.training.models import JOB_KIND_CHOICES, Job, JobStatus

# The GPU model a job counts as when its worker reported no GPU (a CPU job, or a
# worker gone before the job ended); it can be priced like any other.
UNKNOWN_GPU = "unknown"


class GpuPrice(models.Model):
    """What one hour of one GPU of this model costs, set by an admin; GPU-hours x this is cost."""

    # As the workers report it (nvidia-smi's name, e.g. "NVIDIA H100 80GB HBM3").
    gpu_model = models.CharField(max_length=200, unique=True)
    price_per_hour = models.DecimalField(
        max_digits=10, decimal_places=4, validators=[MinValueValidator(Decimal("0"))]
    )
    currency = models.CharField(max_length=3, default="USD")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["gpu_model"]
        verbose_name = "GPU price"

    def __str__(self) -> str:
        return f"{self.gpu_model}: {self.price_per_hour} {self.currency}/h"


class FinishedJob(models.Model):
    """A job as the dashboards count it once it ended: when, how, on what GPUs, for how long.

    Written on commit of the job's final transition (``training.hooks.on_job_finished``),
    again if a reconciler calls the hook again: one row per job, the newest facts win.
    """

    job = models.OneToOneField(Job, on_delete=models.CASCADE, primary_key=True, related_name="+")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16, choices=JOB_KIND_CHOICES)
    status = models.CharField(max_length=16, choices=JobStatus.choices)
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField()
    # Seconds between submission and the last attempt's start (none: never started).
    wait_seconds = models.FloatField(null=True, blank=True)
    gpus = models.PositiveIntegerField(default=0)
    run_seconds = models.FloatField(default=0.0)
    gpu_hours = models.FloatField(default=0.0)
    gpu_model = models.CharField(max_length=200, default=UNKNOWN_GPU)
    # The first line of a failed job's error, grouped as its "reason".
    failure_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-finished_at"]
        indexes = [
            models.Index(fields=["finished_at"]),
            models.Index(fields=["project", "finished_at"]),
        ]

    def __str__(self) -> str:
        return f"job {self.job_id} {self.status} ({self.gpu_hours:.2f} GPU-h)"


class WorkerHour(models.Model):
    """One worker's GPUs during one clock hour (UTC), summed from its heartbeats.

    A heartbeat adds the seconds since the worker's previous one (capped: a longer
    silence is an outage, not use) to every GPU it reports; a GPU at 0% counts as
    idle (the waste a manager looks for), one that reports no utilization as neither.
    """

    worker = models.CharField(max_length=200)
    hour = models.DateTimeField()
    samples = models.PositiveIntegerField(default=0)
    gpu_seconds = models.FloatField(default=0.0)
    busy_gpu_seconds = models.FloatField(default=0.0)
    idle_gpu_seconds = models.FloatField(default=0.0)
    # Sum of utilization_percent x seconds: divided by gpu_seconds, the hour's mean utilization.
    utilization_seconds = models.FloatField(default=0.0)
    last_sample_at = models.DateTimeField()

    class Meta:
        ordering = ["hour", "worker"]
        constraints = [models.UniqueConstraint(fields=["worker", "hour"], name="one_row_per_worker_hour")]
        indexes = [models.Index(fields=["hour"])]

    def __str__(self) -> str:
        return f"{self.worker} @ {self.hour:%Y-%m-%d %H}:00"
