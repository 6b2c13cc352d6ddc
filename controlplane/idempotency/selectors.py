"""Reads of idempotency records."""

from __future__ import annotations

from controlplane.idempotency.models import IdempotencyRecord


def record_find(*, caller: str, key: str) -> IdempotencyRecord | None:
    return IdempotencyRecord.objects.filter(caller=caller, key=key).first()
