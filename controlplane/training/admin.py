"""The Django admin's pages for base models, jobs (read-only status) and workers."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from controlplane.admin import ReadOnlyAdmin
from controlplane.errors import DomainError
from controlplane.training.models import BaseModel, Job, JobEvent, JobTag, Worker
from controlplane.training.selectors import base_model_uri_check


class BaseModelForm(forms.ModelForm):
    """The admin's base model form: its URI passes the same rule as the API's (workers.uris)."""

    class Meta:
        model = BaseModel
        fields = ["project", "name", "uri", "description", "trust_remote_code"]

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        project, uri = data.get("project"), data.get("uri")
        if project is not None and uri is not None:
            try:
                base_model_uri_check(project=project, uri=uri)
            except DomainError as exc:  # refused, or MLflow did not answer about a runs:/ URI
                self.add_error("uri", exc.message)
        return data


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    form = BaseModelForm
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


class JobTagInline(admin.TabularInline):
    model = JobTag
    extra = 0
    can_delete = False
    readonly_fields = ["name"]
    exclude = ["project"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    # Jobs are created, dispatched and moved only by the training services (tags and notes by
    # the runs table and PATCH /api/v1/jobs/<id>).
    list_display = ["pk", "name", "project", "status", "attempt", "worker", "created_at"]
    list_filter = ["status", "queue"]
    search_fields = ["name", "notes"]
    inlines = [JobEventInline, JobTagInline]


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin):
    list_display = ["name", "host", "queues", "last_seen"]
