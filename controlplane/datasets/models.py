from __future__ import annotations

from django.conf import settings
from django.db import models

from controlplane.accounts.models import Project


class DatasetFormat(models.TextChoices):
    """The row schema of a version (its normalized Parquet columns)."""

    TEXT = "text"
    INSTRUCTION = "instruction"
    CHAT = "chat"
    PREFERENCE = "preference"
    MULTIPLE_CHOICE = "multiple_choice"


class Dataset(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="datasets")
    name = models.SlugField(max_length=100)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="dataset_name_unique_in_project")
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.name}"


class DatasetVersion(models.Model):
    """An immutable version: its content lives at ``uri``, addressed by ``sha256``."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    format = models.CharField(max_length=32, choices=DatasetFormat.choices)
    sha256 = models.CharField(max_length=64)
    uri = models.CharField(max_length=1000)
    filename = models.CharField(max_length=255)
    row_count = models.PositiveIntegerField()
    size_bytes = models.PositiveBigIntegerField()
    # The uploaded file's format ("jsonl", "csv", ...); the content is stored as Parquet whatever it was.
    source_format = models.CharField(max_length=32, default="jsonl")
    stats = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "version"], name="dataset_version_unique"),
            models.UniqueConstraint(fields=["dataset", "sha256"], name="dataset_content_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.dataset}@v{self.version}"


class IngestStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    def is_finished(self) -> bool:
        return self in (IngestStatus.SUCCEEDED, IngestStatus.FAILED)


class DatasetIngest(models.Model):
    """One uploaded file on its way to becoming a version: staged, checked, normalized, stored.

    The upload is staged on disk by the web request; the control worker does
    the rest and reports its progress here. A failed ingest keeps its report
    and nothing else: no dataset, no version, no artifact.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="dataset_ingests")
    name = models.SlugField(max_length=100)
    filename = models.CharField(max_length=255)
    # The staged upload, deleted when the ingest ends.
    staged_path = models.CharField(max_length=1000, blank=True)
    size_bytes = models.PositiveBigIntegerField()
    schema = models.CharField(max_length=32, choices=DatasetFormat.choices, blank=True)
    mapping = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=IngestStatus.choices, default=IngestStatus.QUEUED)
    progress = models.FloatField(default=0.0)
    message = models.TextField(blank=True)
    report = models.JSONField(null=True, blank=True)
    version = models.ForeignKey(
        DatasetVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="ingests"
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"ingest {self.pk} of {self.filename}"

    @property
    def is_finished(self) -> bool:
        return IngestStatus(self.status).is_finished()
