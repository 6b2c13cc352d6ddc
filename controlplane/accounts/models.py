"""Projects, memberships and the roles they grant (viewer < member < approver < admin)."""

from __future__ import annotations

from django.conf import settings

# Tuneyard's people are Django's own users; services name them by this type.
from django.contrib.auth.models import User as User
from django.db import models


class Role(models.TextChoices):
    """Roles in a project, each including the rights of the ones before it."""

    VIEWER = "viewer"
    MEMBER = "member"
    APPROVER = "approver"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def includes(self, other: Role) -> bool:
        return self.rank >= other.rank


class Project(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    # Quotas, checked before a GPU job is dispatched; empty means no limit.
    max_concurrent_gpus = models.PositiveIntegerField(null=True, blank=True)
    gpu_hours_quota = models.FloatField(null=True, blank=True)
    quota_period_days = models.PositiveIntegerField(default=30)
    # While set, none of the project's queued jobs is sent to a worker (running ones go on).
    dispatch_paused_at = models.DateTimeField(null=True, blank=True)
    dispatch_paused_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Not a field: the reader's role, by user id, that selectors.project_get found with the project.
    _member_roles: dict[int, Role | None]

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def dispatch_paused(self) -> bool:
        return self.dispatch_paused_at is not None


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="one_membership_per_user")]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} as {self.role}"
