"""The Django admin's pages of the dashboards: GPU prices are set here; the rest is read-only."""

from __future__ import annotations

from django.contrib import admin

from controlplane.admin import ReadOnlyAdmin
from controlplane.dashboards.models import FinishedJob, GpuPrice, WorkerHour


@admin.register(GpuPrice)
class GpuPriceAdmin(admin.ModelAdmin):
    list_display = ["gpu_model", "price_per_hour", "currency", "updated_at"]
    search_fields = ["gpu_model"]


@admin.register(FinishedJob)
class FinishedJobAdmin(ReadOnlyAdmin):
    list_display = ["job", "project", "status", "gpu_model", "gpu_hours", "finished_at"]
    list_filter = ["status", "gpu_model"]


@admin.register(WorkerHour)
class WorkerHourAdmin(ReadOnlyAdmin):
    list_display = ["worker", "hour", "samples", "gpu_seconds", "idle_gpu_seconds"]
