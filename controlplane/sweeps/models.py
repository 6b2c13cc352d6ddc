"""Sweeps and their trials, with the sampler, pruner and backend enums."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from controlplane.accounts.models import Project
from controlplane.datasets.models import DatasetVersion
from controlplane.training.models import BaseModel, Job


class SweepStatus(models.TextChoices):
    RUNNING = "running"  # launching trials up to its parallelism and budget
    PAUSED = "paused"  # launches nothing new; running trials go on
    FINISHED = "finished"  # its budget is spent and every trial has ended
    STOPPED = "stopped"  # stopped by a person or by its GPU-hour cap

    def is_finished(self) -> bool:
        return self in (SweepStatus.FINISHED, SweepStatus.STOPPED)


class Direction(models.TextChoices):
    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"


class Sampler(models.TextChoices):
    TPE = "tpe"
    RANDOM = "random"
    GRID = "grid"
    CMAES = "cmaes"
    QMC = "qmc"


class Pruner(models.TextChoices):
    NONE = "none"
    MEDIAN = "median"
    SUCCESSIVE_HALVING = "successive_halving"
    HYPERBAND = "hyperband"


class Backend(models.TextChoices):
    # The control plane's Optuna study asks for trials; each trial is an ordinary job.
    OPTUNA = "optuna"
    # One driver job runs Ray Tune (Optuna search, ASHA) on RAY_ADDRESS or a local Ray,
    # and reports its trials back.
    RAY = "ray"


class Sweep(models.Model):
    """A base job, a search space and an objective, searched by one of the backends."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="sweeps")
    name = models.CharField(max_length=200)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="sweeps")
    dataset_version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="sweeps")
    base_config = models.JSONField()  # a validated TrainingConfig every trial starts from
    search_space = models.JSONField()  # a validated sweeps.space.SearchSpace
    objective_metric = models.CharField(max_length=100, default="train_loss")
    # The metric the pruner watches during training (heartbeats carry it per step).
    intermediate_metric = models.CharField(max_length=100, default="loss")
    direction = models.CharField(max_length=8, choices=Direction.choices, default=Direction.MINIMIZE)
    sampler = models.CharField(max_length=20, choices=Sampler.choices, default=Sampler.TPE)
    pruner = models.CharField(max_length=20, choices=Pruner.choices, default=Pruner.MEDIAN)
    seed = models.PositiveIntegerField(default=0)
    n_trials = models.PositiveIntegerField()
    parallelism = models.PositiveIntegerField(default=1)
    gpu_hours_cap = models.FloatField(null=True, blank=True)
    # Trials launched so far; only sweeps.services changes it, by compare-and-set.
    trials_launched = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=10, choices=SweepStatus.choices, default=SweepStatus.RUNNING)
    stop_reason = models.CharField(max_length=300, blank=True)
    study_name = models.CharField(max_length=100, unique=True)
    backend = models.CharField(max_length=10, choices=Backend.choices, default=Backend.OPTUNA)
    # A Ray sweep's one job, which runs Ray Tune; None for Optuna sweeps.
    driver_job = models.OneToOneField(
        Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="driven_sweep"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"sweep {self.pk} ({self.name})"


class TrialState(models.TextChoices):
    RUNNING = "running"
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"


class Trial(models.Model):
    """One trial: of an Optuna sweep, with the job that runs it; of a Ray sweep, as its
    driver job reported it (no job of its own, its intermediate values kept here)."""

    sweep = models.ForeignKey(Sweep, on_delete=models.CASCADE, related_name="trials")
    number = models.PositiveIntegerField()  # Optuna's trial number in the study, or the driver's
    optuna_trial_id = models.PositiveIntegerField(null=True, blank=True)  # Optuna sweeps only
    job = models.OneToOneField(Job, null=True, blank=True, on_delete=models.CASCADE, related_name="trial")
    params = models.JSONField()
    # Ray trials: [[step, value], ...] of the intermediate metric, and the trial's MLflow child run.
    intermediate_values = models.JSONField(default=list, blank=True)
    mlflow_run_id = models.CharField(max_length=64, blank=True)
    error = models.CharField(max_length=2000, blank=True)  # why a Ray trial failed, as its driver said
    state = models.CharField(max_length=10, choices=TrialState.choices, default=TrialState.RUNNING)
    value = models.FloatField(null=True, blank=True)
    # A failed trial whose parameters were already queued again as a new trial.
    rerun = models.BooleanField(default=False)

    class Meta:
        ordering = ["sweep", "number"]
        constraints = [models.UniqueConstraint(fields=["sweep", "number"], name="one_trial_per_number")]

    def __str__(self) -> str:
        return f"{self.sweep} trial {self.number}"
