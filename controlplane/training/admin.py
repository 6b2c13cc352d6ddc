from __future__ import annotations

from django.contrib import admin

from controlplane.training.models import BaseModel, Job, JobEvent


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "uri"]


class JobEventInline(admin.TabularInline):
    model = JobEvent
    extra = 0
    can_delete = False
    readonly_fields = [
        "at",
        "actor",
        "actor_label",
        "attempt",
        "from_status",
        "to_status",
        "message",
    ]


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["pk", "name", "project", "status", "attempt", "worker", "created_at"]
    list_filter = ["status", "queue"]
    # Status changes go through services.job_transition, never the admin form.
    readonly_fields = ["status", "attempt"]
    inlines = [JobEventInline]
