"""Datasets, their versions (content by hash, schema, stats), operations and resumable uploads."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from controlplane.accounts.models import Project
from workers.spec import DatasetSchema

# The row schema of a version (its normalized Parquet columns): the contract's one enum of them.
DATASET_SCHEMA_CHOICES = [(schema.value, schema.name.replace("_", " ").title()) for schema in DatasetSchema]


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
    format = models.CharField(max_length=32, choices=DATASET_SCHEMA_CHOICES)
    sha256 = models.CharField(max_length=64)
    uri = models.CharField(max_length=1000)
    filename = models.CharField(max_length=255)
    row_count = models.PositiveIntegerField()
    size_bytes = models.PositiveBigIntegerField()
    # A version made from another one (by dedup or a split), and how.
    parent = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="children"
    )
    derivation = models.JSONField(default=dict, blank=True)
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


class OperationStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    def is_finished(self) -> bool:
        return self in (OperationStatus.SUCCEEDED, OperationStatus.FAILED)


class OperationKind(models.TextChoices):
    UPLOAD = "upload"
    DEDUP = "dedup"
    SPLIT = "split"
    CONTAMINATION = "contamination"
    PII_SCAN = "pii_scan"


class DatasetOperation(models.Model):
    """One piece of dataset work the control worker does, with its progress and its outcome.

    An upload: the file is staged on disk by the web request, then checked,
    normalized and stored as a version; a failed upload keeps its report and
    nothing else (no dataset, no version, no artifact). The other kinds work on
    a stored ``source_version``: dedup and split make new versions, the
    contamination check and the PII scan only report (in ``result``).
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="dataset_operations")
    kind = models.CharField(max_length=16, choices=OperationKind.choices, default=OperationKind.UPLOAD)
    # The dataset name the new version goes to (uploads and dedup); split parts get a suffix.
    name = models.SlugField(max_length=100)
    filename = models.CharField(max_length=255, blank=True)
    # The staged upload, deleted when the operation ends.
    staged_path = models.CharField(max_length=1000, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)
    schema = models.CharField(max_length=32, choices=DATASET_SCHEMA_CHOICES, blank=True)
    mapping = models.JSONField(default=dict, blank=True)
    source_version = models.ForeignKey(
        DatasetVersion, on_delete=models.CASCADE, null=True, blank=True, related_name="operations"
    )
    # What the kind needs: a dedup threshold, split fractions and seed, the version to check against.
    options = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=OperationStatus.choices, default=OperationStatus.QUEUED)
    progress = models.FloatField(default=0.0)
    message = models.TextField(blank=True)
    # Why an upload failed: counts and examples of each problem.
    report = models.JSONField(null=True, blank=True)
    # What a finished operation found or made (removed pairs, split version ids, matches).
    result = models.JSONField(null=True, blank=True)
    version = models.ForeignKey(
        DatasetVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="made_by"
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # Moved with every progress report: a running operation silent too long lost its worker.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} {self.pk} of {self.filename or self.source_version}"

    @property
    def is_finished(self) -> bool:
        return OperationStatus(self.status).is_finished()


class ChunkedUpload(models.Model):
    """A large file sent in pieces, each appended at the offset the server holds.

    A broken connection resumes from ``received_bytes`` instead of from the
    start; once every byte is in, ``finish`` starts an ordinary ingest of the
    staged file.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="chunked_uploads")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    filename = models.CharField(max_length=255)
    size_bytes = models.PositiveBigIntegerField()
    received_bytes = models.PositiveBigIntegerField(default=0)
    staged_path = models.CharField(max_length=1000)
    # The ingest the finished upload became; None while bytes are still coming.
    operation = models.OneToOneField(
        DatasetOperation, on_delete=models.SET_NULL, null=True, blank=True, related_name="chunked_upload"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"upload {self.pk} of {self.filename} ({self.received_bytes}/{self.size_bytes} bytes)"
