from __future__ import annotations

from django.contrib import admin

from controlplane.datasets.models import Dataset, DatasetVersion


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "created_at"]


@admin.register(DatasetVersion)
class DatasetVersionAdmin(admin.ModelAdmin):
    list_display = ["dataset", "version", "row_count", "sha256", "created_by", "created_at"]
    readonly_fields = [f.name for f in DatasetVersion._meta.fields]
