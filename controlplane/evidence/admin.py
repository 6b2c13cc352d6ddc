"""The evidence app in Django's admin: read-only, since what an approver decided on never changes."""

from __future__ import annotations

from django.contrib import admin

from controlplane.admin import ReadOnlyAdmin
from controlplane.evidence.models import GateCheck, GatePolicy, ModelCard, ReviewVote, Suite, SuiteRun


@admin.register(Suite)
class SuiteAdmin(ReadOnlyAdmin):
    list_display = ["name", "version", "model_name", "project", "created_by", "created_at"]


@admin.register(SuiteRun)
class SuiteRunAdmin(ReadOnlyAdmin):
    list_display = ["suite", "model_version", "status", "created_at", "finished_at"]
    list_filter = ["status"]


@admin.register(GatePolicy)
class GatePolicyAdmin(ReadOnlyAdmin):
    list_display = ["model_name", "target", "project", "updated_by", "updated_at"]


@admin.register(GateCheck)
class GateCheckAdmin(ReadOnlyAdmin):
    list_display = ["promotion", "passed", "checked_at"]


@admin.register(ReviewVote)
class ReviewVoteAdmin(ReadOnlyAdmin):
    list_display = ["promotion", "task", "row", "voter", "vote", "at"]


@admin.register(ModelCard)
class ModelCardAdmin(ReadOnlyAdmin):
    list_display = ["promotion", "digest", "created_at"]
