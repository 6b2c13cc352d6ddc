"""The Django admin's pages for model versions, promotions and deployments."""

from __future__ import annotations

from django.contrib import admin

from controlplane.admin import ReadOnlyAdmin
from controlplane.registry.models import Deployment, ModelVersion, Promotion, PromotionComment


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ["name", "version", "project", "job", "created_by", "created_at"]


@admin.register(Promotion)
class PromotionAdmin(ReadOnlyAdmin):
    list_display = ["model_version", "target", "kind", "status", "requested_by", "decided_by"]
    list_filter = ["kind", "status", "target"]


@admin.register(PromotionComment)
class PromotionCommentAdmin(ReadOnlyAdmin):
    list_display = ["promotion", "author", "at"]


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdmin):
    list_display = ["project", "model_name", "target", "model_version", "approved_by", "approved_at"]
