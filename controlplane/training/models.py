"""Base models, jobs with their events, metric points and log lines, and workers."""

from __future__ import annotations

import json

from django.conf import settings
from django.db import models
from django.utils import timezone

from controlplane.accounts.models import Project
from controlplane.datasets.models import DatasetVersion
from workers.spec import JobKind, TrainedArtifact, TrainedArtifactKind


class BaseModel(models.Model):
    """A model to fine-tune from: a hub id, a local path, or an MLflow artifact URI."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="base_models")
    name = models.SlugField(max_length=100)
    uri = models.CharField(max_length=1000)
    description = models.TextField(blank=True)
    # The model repository's own Python (``auto_map`` in its config) runs on the
    # workers that load it only when a site admin allows it here: workers serve
    # every project, so this is not a project's own decision.
    trust_remote_code = models.BooleanField(
        default=False,
        help_text="Run the model repository's own code on the workers (only for a model you trust).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="base_model_name_unique")]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.name}"


class JobStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def is_finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


# What a job does: the one enum of job kinds, shared with the workers (a sweep's
# trials are finetunes; its Ray driver is a sweep-driver job).
JOB_KIND_CHOICES = [(kind.value, kind.value.replace("-", " ")) for kind in JobKind]


def broker_priority(priority: int) -> int:
    """A job's priority (-100..100, higher first) as a Redis message priority (0..9, 0 first)."""
    return round((100 - priority) * 9 / 200)


class Job(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="jobs")
    name = models.CharField(max_length=200)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    kind = models.CharField(max_length=16, choices=JOB_KIND_CHOICES, default=JobKind.FINETUNE)
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="jobs")
    # The data trained on, or, for an evaluate job, scored.
    dataset_version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="jobs")
    # A validated workers.spec.TrainingConfig (an EvaluateConfig for an evaluate job), as JSON.
    config = models.JSONField()
    # An evaluate job's: the succeeded finetune whose adapter or model it scores (none: the base
    # model as it is), and the multiple-choice version its few-shot examples come from (none: the
    # evaluated rows themselves).
    source_job = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="evaluations"
    )
    fewshot_dataset_version = models.ForeignKey(
        DatasetVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="fewshot_jobs"
    )
    # A file the control plane wrote for this job, read in place of its dataset version's rows
    # (a judge job's pairs, whose prompts came from those rows). Empty: the version's own file.
    input_uri = models.CharField(max_length=2000, blank=True)
    queue = models.CharField(max_length=64)
    # Whole GPUs the job holds while it runs (from its config's resources).
    gpus = models.PositiveIntegerField(default=0)
    # Among a project's jobs waiting for quota, higher goes first.
    priority = models.SmallIntegerField(default=0)
    # Why a queued job is not yet sent to a worker (empty once it is).
    waiting_reason = models.CharField(max_length=300, blank=True)
    # The worker's GPU indices the running attempt holds, and since when they all show 0% use.
    gpu_indices = models.JSONField(default=list, blank=True)
    gpu_idle_since = models.DateTimeField(null=True, blank=True)

    # Only training.services.transitions.job_transition writes status and attempt.
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    attempt = models.PositiveIntegerField(default=1)
    worker = models.CharField(max_length=200, blank=True)

    progress = models.FloatField(default=0.0)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    mlflow_experiment = models.CharField(max_length=300)
    mlflow_run_id = models.CharField(max_length=64, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    artifacts = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    # The newest checkpoint any attempt stored; the next attempt resumes from it.
    checkpoint_uri = models.CharField(max_length=2000, blank=True)
    checkpoint_step = models.PositiveIntegerField(default=0)
    # Wall-clock seconds of all its attempts' running time; GPU-hours are gpus x this.
    run_seconds = models.FloatField(default=0.0)

    created_at = models.DateTimeField(auto_now_add=True)
    # dispatched_at: the job was let through (quota reserved) and its message is being sent;
    # published_at: the broker took the message, while the broker process was broker_epoch.
    dispatched_at = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    broker_epoch = models.CharField(max_length=64, blank=True)
    # The current attempt's JobSpec (a workers.spec.JobSpec as JSON), built once when the
    # attempt is first sent; the message carries it and the worker's claim is answered with it.
    spec = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # What people wrote about the run; searched with its name by the runs table.
    notes = models.TextField(blank=True, max_length=10_000)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "dispatched_at"]),
            # The runs table's default order (newest first) and its keyset cursor (created_at, id).
            models.Index(fields=["project", "created_at", "id"], name="job_project_created"),
            models.Index(fields=["project", "name", "id"], name="job_project_name"),
        ]

    # What job_create's checks found worth saying (training.preflight); not stored.
    preflight_warnings: list[str]

    def __str__(self) -> str:
        return f"job {self.pk} ({self.status})"

    @property
    def status_enum(self) -> JobStatus:
        return JobStatus(self.status)

    @property
    def is_finished(self) -> bool:
        return self.status_enum.is_finished()

    @property
    def is_evaluation(self) -> bool:
        return self.kind == JobKind.EVALUATE

    @property
    def is_judge(self) -> bool:
        """Whether this evaluate job judges pairs of answers (its config is a JudgeJobConfig)."""
        return self.kind == JobKind.EVALUATE and "judge" in self.config

    @property
    def is_evaluable(self) -> bool:
        """Whether an evaluate job can score what this job trained."""
        return (
            self.kind == JobKind.FINETUNE
            and self.status == JobStatus.SUCCEEDED
            and bool(self.artifacts.get("adapter") or self.artifacts.get("model"))
        )

    @property
    def trained_artifact(self) -> TrainedArtifact | None:
        """What this job trained, as an evaluation or a registration takes it; None if nothing."""
        # The whole model first: an adapter merged for export is scored as it will be deployed.
        for kind in (TrainedArtifactKind.MODEL, TrainedArtifactKind.ADAPTER):
            uri = self.artifacts.get(kind.value)
            if uri:
                return TrainedArtifact(kind=kind, uri=uri)
        return None

    @property
    def config_json(self) -> str:
        return json.dumps(self.config, sort_keys=True)

    @property
    def gpu_idle_minutes(self) -> int | None:
        """Minutes its GPUs have shown no use, once past the flag threshold; else None."""
        if self.gpu_idle_since is None or self.is_finished:
            return None
        idle = (timezone.now() - self.gpu_idle_since).total_seconds()
        return int(idle // 60) if idle >= settings.GPU_IDLE_FLAG_SECONDS else None

    @property
    def gpu_hours(self) -> float:
        return self.gpus * self.run_seconds / 3600

    @property
    def progress_percent(self) -> int:
        return round(self.progress * 100)


class JobTag(models.Model):
    """A label people put on a run ("baseline", "paper"); the runs table filters by it."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="tags")
    # The job's project, kept here so that a project's tags are listed from this table alone.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=64)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["job", "name"], name="job_tag_unique")]
        indexes = [models.Index(fields=["project", "name"], name="job_tag_project_name")]

    def __str__(self) -> str:
        return self.name


class _JobSummaryValue(models.Model):
    """One number of a job, by name, so that the runs table sorts and filters on an index.

    A sort by ``eval_loss`` over 10,000 jobs reads the first page off the
    (project, name, value, job) index instead of every job's JSON. The rows
    are derived (from Job.metrics or Job.config) by training.services.summaries
    and may be rebuilt from the job at any time.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100)
    value = models.FloatField()

    class Meta:
        abstract = True


class JobMetricValue(_JobSummaryValue):
    """A final metric of a job's current attempt (from Job.metrics, written when it finishes)."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="metric_values")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "name"], name="job_metric_value_unique")]
        indexes = [
            models.Index(fields=["project", "name", "value", "job"], name="job_metric_value_sort"),
            models.Index(fields=["name", "value", "job"], name="job_metric_value_any_project"),
        ]

    def __str__(self) -> str:
        return f"{self.name}={self.value}"


class JobParam(_JobSummaryValue):
    """A numeric hyperparameter of a job (from Job.config, written when it is created)."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="param_values")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "name"], name="job_param_unique")]
        indexes = [
            models.Index(fields=["project", "name", "value", "job"], name="job_param_sort"),
            models.Index(fields=["name", "value", "job"], name="job_param_any_project"),
        ]

    def __str__(self) -> str:
        return f"{self.name}={self.value}"


def config_params(config: dict) -> dict[str, float | str]:
    """A job's config as flat parameters: ``learning_rate``, ``method.r``, ``resources.gpus``...

    The hyperparameters go by their own names (what people call them); every
    other leaf by its dotted path. Lists are left out. Pure, so that the
    migration that backfills JobParam uses the very same rule.
    """
    flat: dict[str, float | str] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, bool):
            flat[prefix] = float(value)
        elif isinstance(value, int | float):
            flat[prefix] = float(value)
        elif isinstance(value, str):
            flat[prefix] = value

    for section, inner in (config or {}).items():
        walk("" if section == "hyperparameters" else section, inner)
    return {name: value for name, value in flat.items() if name and len(name) <= 100}


def numeric_params(config: dict) -> dict[str, float]:
    return {
        name: value
        for name, value in config_params(config).items()
        if isinstance(value, float) and value == value and abs(value) != float("inf")
    }


class JobEvent(models.Model):
    """The audit trail of a job: every status change, with who made it."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(auto_now_add=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    # Who acted when no user did: "worker:<name>", "reconciler".
    actor_label = models.CharField(max_length=200, blank=True)
    attempt = models.PositiveIntegerField()
    from_status = models.CharField(max_length=16, choices=JobStatus.choices, blank=True)
    to_status = models.CharField(max_length=16, choices=JobStatus.choices)
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["at", "pk"]

    def __str__(self) -> str:
        return f"job {self.job_id}: {self.from_status or '-'} -> {self.to_status}"


class JobMetricPoint(models.Model):
    """Training curves the pages chart, kept here so they never depend on MLflow's query speed."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="metric_points")
    attempt = models.PositiveIntegerField()
    name = models.CharField(max_length=100)
    step = models.PositiveIntegerField()
    value = models.FloatField()

    class Meta:
        ordering = ["name", "step"]
        constraints = [
            models.UniqueConstraint(fields=["job", "attempt", "name", "step"], name="one_point_per_step")
        ]

    def __str__(self) -> str:
        return f"{self.name}@{self.step}={self.value}"


class JobLogLine(models.Model):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="log_lines")
    attempt = models.PositiveIntegerField()
    at = models.DateTimeField(auto_now_add=True)
    text = models.TextField()

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.text[:80]


class Worker(models.Model):
    """A worker process as it last described itself; shared by every project."""

    name = models.CharField(max_length=200, unique=True)
    host = models.CharField(max_length=200)
    queues = models.JSONField(default=list)
    # [{"index", "name", "memory_total_mb", "memory_used_mb", "utilization_percent"}]
    gpus = models.JSONField(default=list)
    version = models.CharField(max_length=50, blank=True)
    running_job_ids = models.JSONField(default=list)
    first_seen = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
