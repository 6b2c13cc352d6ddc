"""Every write to idempotency records: claim a key, store its answer or give it back, expire old ones.

Exactly one request runs per (caller, key): a claim is an INSERT that the unique
constraint lets only one of any number of concurrent requests commit, never a read
followed by a write. Every later change is conditional on the claim's own
``claimed_at``, so a request whose lease was taken over (presumed dead, yet alive)
can neither store its answer over the new one nor give the key back.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from controlplane.errors import Conflict, DomainError, ValidationFailed
from controlplane.idempotency.models import IdempotencyRecord, RecordState

MAX_KEY_LENGTH = 255


class IdempotencyKeyInvalid(ValidationFailed):
    code = "idempotency_key_invalid"


class IdempotencyKeyReused(DomainError):
    code = "idempotency_key_reused"
    status = 422


class IdempotencyKeyInUse(Conflict):
    code = "idempotency_key_in_use"


def key_check(raw: str) -> str:
    """The key an ``Idempotency-Key`` header value names: as sent, or the draft's quoted form unquoted."""
    key = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
    if not key.strip():
        raise IdempotencyKeyInvalid(
            "The Idempotency-Key header is empty; send a value unique to the operation, such as a UUID."
        )
    if len(key) > MAX_KEY_LENGTH:
        raise IdempotencyKeyInvalid(
            f"The Idempotency-Key header is {len(key)} characters long; at most {MAX_KEY_LENGTH} are allowed."
        )
    if not (key.isascii() and key.isprintable()):
        raise IdempotencyKeyInvalid("The Idempotency-Key header may hold only printable ASCII characters.")
    return key


def record_claim(
    *, caller: str, key: str, request_digest: str, method: str, path: str
) -> tuple[IdempotencyRecord, bool]:
    """The record of ``caller``'s ``key``, and whether this request took it (and so must run).

    A record past retention is deleted and the key taken anew; a running one whose
    request has been silent past the lease (its process died) is taken over by the
    same request retried.
    """
    retention = timedelta(seconds=settings.IDEMPOTENCY_RETENTION_SECONDS)
    lease = timedelta(seconds=settings.IDEMPOTENCY_LEASE_SECONDS)
    for _ in range(3):
        now = timezone.now()
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(
                    caller=caller,
                    key=key,
                    request_digest=request_digest,
                    method=method,
                    path=path,
                    created_at=now,
                    claimed_at=now,
                )
            return record, True
        except IntegrityError:
            pass  # the key is taken: read by whom, below
        found = IdempotencyRecord.objects.filter(caller=caller, key=key).first()
        if found is None:
            continue  # given back (a 5xx) or expired between the insert and the read
        if found.created_at <= now - retention:
            # Of several requests deleting it, any one succeeding is enough; all then try the insert.
            IdempotencyRecord.objects.filter(pk=found.pk, created_at=found.created_at).delete()
            continue
        if (
            found.state == RecordState.RUNNING
            and found.claimed_at <= now - lease
            and found.request_digest == request_digest
        ):
            taken = IdempotencyRecord.objects.filter(
                pk=found.pk, state=RecordState.RUNNING, claimed_at=found.claimed_at
            ).update(claimed_at=now)
            if taken:
                found.claimed_at = now
                return found, True
        return found, False
    raise IdempotencyKeyInUse(
        "A request with this Idempotency-Key keeps failing and being retried at this moment; try again."
    )


def record_finish(
    *, record: IdempotencyRecord, user_id: int | None, status: int, headers: list[list[str]], body: bytes
) -> bool:
    """Store the answer to replay; False if the claim was taken over meanwhile (the new one answers)."""
    return bool(
        IdempotencyRecord.objects.filter(
            pk=record.pk, state=RecordState.RUNNING, claimed_at=record.claimed_at
        ).update(
            state=RecordState.DONE,
            user_id=user_id,
            finished_at=timezone.now(),
            response_status=status,
            response_headers=headers,
            response_body=body,
        )
    )


def record_release(*, record: IdempotencyRecord) -> None:
    """Give the key back (the answer was not one to replay): the next request with it runs again."""
    IdempotencyRecord.objects.filter(
        pk=record.pk, state=RecordState.RUNNING, claimed_at=record.claimed_at
    ).delete()


def records_expire() -> int:
    """Delete the records past retention; returns how many."""
    cutoff = timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_RETENTION_SECONDS)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lte=cutoff).delete()
    return deleted
