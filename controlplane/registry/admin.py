from __future__ import annotations

from django.contrib import admin

from controlplane.registry.models import Deployment, ModelVersion, Promotion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "project", "job", "created_by", "created_at"]


@admin.register(Promotion)
class PromotionAdmin(admin.ModelAdmin):
    list_display = ["model_version", "target", "status", "requested_by", "decided_by"]
    readonly_fields = ["status"]


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = [
        "project",
        "model_name",
        "target",
        "model_version",
        "approved_by",
        "approved_at",
    ]
