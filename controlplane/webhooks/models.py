"""Webhook subscriptions, the outbox of events, and each delivery with its attempts.

An event is written once (its ``key`` says what happened: "job 12, attempt 1,
succeeded"), in the transaction of the change it reports where the change's
app offers a seam, else right after it; a delivery row per subscribed endpoint
is written with it. Sending happens after commit and again from the periodic
``webhooks.deliveries_send`` task, so an event outlives a crash or a broker
restart between its commit and its sending.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from controlplane.accounts.models import Project


class EventType(models.TextChoices):
    JOB_SUCCEEDED = "job.succeeded"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"
    EVALUATION_FINISHED = "evaluation.finished"
    SWEEP_FINISHED = "sweep.finished"
    PROMOTION_REQUESTED = "promotion.requested"
    PROMOTION_APPROVED = "promotion.approved"
    PROMOTION_REJECTED = "promotion.rejected"
    DEPLOYMENT_CHANGED = "deployment.changed"


class Endpoint(models.Model):
    """A URL a project's admin subscribed to some (or all) of the project's events."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    # The EventType values sent here; empty: every event.
    event_types = models.JSONField(default=list, blank=True)
    # Standard Webhooks secrets ("whsec_" + base64). While a rotated-out secret has not expired,
    # every message is signed with both, so a receiver can switch at its own pace.
    secret = models.CharField(max_length=100)
    previous_secret = models.CharField(max_length=100, blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"{self.project.slug} → {self.url}"

    def wants(self, event_type: str) -> bool:
        return self.enabled and (not self.event_types or event_type in self.event_types)


class Event(models.Model):
    """What happened, once: the outbox row the deliveries are made from."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="webhook_events")
    # What happened, as a stable key ("job:12:1:succeeded"): the same news reported twice
    # (a hook and a reconciler) is one event.
    key = models.CharField(max_length=200, unique=True)
    type = models.CharField(max_length=40, choices=EventType.choices)
    data = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.type} ({self.key})"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    # Every attempt of the retry schedule failed; a person may redeliver.
    FAILED = "failed"


class Delivery(models.Model):
    """One event for one endpoint: one message id (``webhook-id``), however many attempts it takes."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    message_id = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # When the next attempt is due; also a lease: a sender claims an attempt by moving it forward.
    next_attempt_at = models.DateTimeField()
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    response_status = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "event"], name="one_delivery_per_endpoint_event")
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.message_id} ({self.status})"


class DeliveryAttempt(models.Model):
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    at = models.DateTimeField(auto_now_add=True)
    # Who asked for it: "" for the schedule, else the person who pressed redeliver.
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    response_status = models.PositiveIntegerField(null=True, blank=True)
    # Why it failed when there was no answer (refused address, timeout, TLS), or the answer's start.
    error = models.CharField(max_length=500, blank=True)
    response_body = models.CharField(max_length=1000, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-at", "-pk"]

    def __str__(self) -> str:
        return f"{self.delivery_id} at {self.at}: {self.response_status or self.error}"
