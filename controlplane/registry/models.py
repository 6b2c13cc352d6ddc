"""Model versions, promotions with their audit trail, and deployments per target."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from controlplane.accounts.models import Project
from controlplane.training.models import Job


class ModelVersion(models.Model):
    """A trained result registered in MLflow's model registry as ``mlflow_name`` / ``version``."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    name = models.SlugField(max_length=100)
    version = models.PositiveIntegerField()
    job = models.ForeignKey(Job, on_delete=models.PROTECT, related_name="model_versions")
    source_uri = models.CharField(max_length=1000)
    mlflow_name = models.CharField(max_length=300)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name", "version"], name="model_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    @property
    def mlflow_uri(self) -> str:
        return f"models:/{self.mlflow_name}/{self.version}"


class Target(models.TextChoices):
    """Where a model version can be promoted; each is an MLflow registered-model alias."""

    STAGING = "staging"
    PRODUCTION = "production"


class PromotionStatus(models.TextChoices):
    REQUESTED = "requested"
    # Claimed by one approver while the MLflow alias moves; then APPROVED, or back to REQUESTED.
    APPROVING = "approving"
    APPROVED = "approved"
    REJECTED = "rejected"
    # Taken back by the person who asked, before anyone decided.
    WITHDRAWN = "withdrawn"

    @property
    def is_open(self) -> bool:
        return self in (PromotionStatus.REQUESTED, PromotionStatus.APPROVING)


class PromotionKind(models.TextChoices):
    PROMOTE = "promote"
    # Back to a version that was deployed to the target before: governed like any promotion.
    ROLLBACK = "rollback"


class Promotion(models.Model):
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="promotions")
    target = models.CharField(max_length=32, choices=Target.choices)
    # Only registry.services.promotion_transition writes status.
    status = models.CharField(
        max_length=16, choices=PromotionStatus.choices, default=PromotionStatus.REQUESTED
    )
    kind = models.CharField(max_length=16, choices=PromotionKind.choices, default=PromotionKind.PROMOTE)
    # An admin's written reason for deciding past what would otherwise refuse it (a failing gate,
    # or an emergency rollback without a second approver); empty when nothing was overridden.
    override_reason = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    requested_at = models.DateTimeField(auto_now_add=True)
    comment = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_comment = models.TextField(blank=True)

    class Meta:
        ordering = ["-requested_at"]
        constraints = [
            # One open request per version and target at a time.
            models.UniqueConstraint(
                fields=["model_version", "target"],
                condition=models.Q(status="requested"),
                name="one_open_promotion_request",
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_version} to {self.target} ({self.status})"


class PromotionEvent(models.Model):
    promotion = models.ForeignKey(Promotion, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(auto_now_add=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    from_status = models.CharField(max_length=16, choices=PromotionStatus.choices, blank=True)
    to_status = models.CharField(max_length=16, choices=PromotionStatus.choices)
    comment = models.TextField(blank=True)

    class Meta:
        ordering = ["at", "pk"]

    def __str__(self) -> str:
        return f"{self.from_status or '-'} -> {self.to_status} by {self.actor}"


class PromotionComment(models.Model):
    """A remark on a request by anyone who can read it, before or after the decision."""

    promotion = models.ForeignKey(Promotion, on_delete=models.CASCADE, related_name="comments")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    at = models.DateTimeField(auto_now_add=True)
    body = models.TextField(max_length=5000)

    class Meta:
        ordering = ["at", "pk"]

    def __str__(self) -> str:
        return f"{self.author} on {self.promotion_id}"


class Deployment(models.Model):
    """What is deployed now: one model version per (project, model name, target)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="deployments")
    model_name = models.SlugField(max_length=100)
    target = models.CharField(max_length=32, choices=Target.choices)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    promotion = models.ForeignKey(Promotion, on_delete=models.PROTECT, related_name="+")
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    approved_at = models.DateTimeField()

    class Meta:
        ordering = ["project", "model_name", "target"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "model_name", "target"], name="one_deployment_per_target"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_version} in {self.target}"
