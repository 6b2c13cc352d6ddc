"""One row per (caller, Idempotency-Key): the request it was first used with, and the answer to replay."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class RecordState(models.TextChoices):
    # The first request with the key is being answered; others with it wait for it.
    RUNNING = "running"
    # Answered (any status below 500): the answer below is replayed to every retry.
    DONE = "done"


class IdempotencyRecord(models.Model):
    # A digest of the credentials the request carried (see middleware.caller_digest), never
    # the credentials themselves: keys are one caller's, another caller's same key is another row.
    caller = models.CharField(max_length=64)
    key = models.CharField(max_length=255)
    # A digest of the method, path, query and body: the same key with another request is refused.
    request_digest = models.CharField(max_length=64)
    method = models.CharField(max_length=10)
    path = models.TextField()
    # Only controlplane.idempotency.services writes state, each time as a conditional update.
    state = models.CharField(max_length=8, choices=RecordState.choices, default=RecordState.RUNNING)
    created_at = models.DateTimeField()
    # When the request now answering took the key; one silent past the lease is presumed dead.
    claimed_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    # Who got the answer (DRF's user): only they are replayed it, and only while their credentials pass.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_headers = models.JSONField(default=list, blank=True)
    response_body = models.BinaryField(default=b"", blank=True)

    class Meta:
        constraints = [
            # What makes a key's request run once, however many arrive at the same moment:
            # of concurrent inserts exactly one commits, the others get an IntegrityError.
            models.UniqueConstraint(fields=["caller", "key"], name="idempotency_key_once_per_caller")
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created_at")]

    def __str__(self) -> str:
        return f"{self.method} {self.path} ({self.key}, {self.state})"
