"""The Django admin's pages for datasets, versions and their operations."""

from __future__ import annotations

from django.contrib import admin

from controlplane.admin import ReadOnlyAdmin
from controlplane.datasets.models import Dataset, DatasetOperation, DatasetVersion


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "created_at"]


@admin.register(DatasetVersion)
class DatasetVersionAdmin(ReadOnlyAdmin):
    # Immutable: a version's content lives at its URI, addressed by its hash.
    list_display = ["dataset", "version", "row_count", "sha256", "created_by", "created_at"]


@admin.register(DatasetOperation)
class DatasetOperationAdmin(ReadOnlyAdmin):
    list_display = ["pk", "project", "name", "filename", "status", "progress", "created_by", "created_at"]
