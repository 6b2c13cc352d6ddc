from __future__ import annotations

from django.conf import settings
from django.db import models

from controlplane.accounts.models import Project


class DatasetFormat(models.TextChoices):
    INSTRUCTION = "instruction"


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
