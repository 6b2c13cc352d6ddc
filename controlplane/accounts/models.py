"""Projects, memberships and the roles they grant (viewer < member < approver < admin); API tokens."""

from __future__ import annotations

import hashlib
from datetime import datetime

from django.conf import settings

# Tuneyard's people are Django's own users; services name them by this type.
from django.contrib.auth.models import User as User
from django.db import models
from django.utils import timezone


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


class TokenScope(models.TextChoices):
    """What an API token may do. A signed-in browser session holds every scope."""

    READ = "read"  # GET, HEAD, OPTIONS
    WRITE = "write"  # every other method
    APPROVE = "approve"  # approving or rejecting a promotion (which also needs the approver role)


class TokenState(models.TextChoices):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


# A token's secret starts with this, so a leaked one is recognised by secret scanners and by eye.
TOKEN_PREFIX = "tyk_"
TOKEN_NAME_MAX = 100


class ApiToken(models.Model):
    """A person's API token. Only a SHA-256 digest of the secret is kept: whoever reads the
    database cannot use a token, and the secret is shown once, when the token is created."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=TOKEN_NAME_MAX)
    # The secret's first characters, to tell tokens apart in a list; too short to guess the rest.
    prefix = models.CharField(max_length=16)
    digest = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)  # TokenScope values
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def digest_of(secret: str) -> str:
        # A secret is 256 random bits: a plain hash is as safe as a slow one, and finds its row by index.
        return hashlib.sha256(secret.encode()).hexdigest()

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at <= (now or timezone.now())

    @property
    def state(self) -> TokenState:
        if self.revoked_at is not None:
            return TokenState.REVOKED
        return TokenState.EXPIRED if self.expired() else TokenState.ACTIVE

    def has_scope(self, scope: TokenScope) -> bool:
        return scope.value in self.scopes
