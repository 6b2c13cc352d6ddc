"""The Django admin's pages for projects and memberships."""

from __future__ import annotations

from django.contrib import admin

from controlplane.accounts.models import Membership, Project


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "max_concurrent_gpus", "gpu_hours_quota", "quota_period_days"]
    inlines = [MembershipInline]
