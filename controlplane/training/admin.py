"""The Django admin's pages for base models, jobs (read-only status) and workers."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from controlplane.admin import ReadOnlyAdmin
from controlplane.training.models import BaseModel, Job, JobEvent, Worker


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    # The one place a base model's own code is allowed to run on the workers.
    list_display = ["name", "project", "uri", "trust_remote_code"]
    list_filter = ["trust_remote_code"]

    def get_readonly_fields(self, request: HttpRequest, obj: BaseModel | None = None) -> list[str]:
        # Workers serve every project: only a superuser lets a model's code run on them.
        readonly = list(super().get_readonly_fields(request, obj))
        return readonly if request.user.is_superuser else [*readonly, "trust_remote_code"]


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
class JobAdmin(ReadOnlyAdmin):
    # Jobs are created, dispatched and moved only by the training services.
    list_display = ["pk", "name", "project", "status", "attempt", "worker", "created_at"]
    list_filter = ["status", "queue"]
    inlines = [JobEventInline]


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin):
    list_display = ["name", "host", "queues", "last_seen"]
