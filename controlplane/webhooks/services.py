"""Every write of webhooks: subscriptions and their secrets, events into the outbox, sending.

Sending is at least once: a receiver dedupes by ``webhook-id``, which stays the
same across the retries and redeliveries of one message.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError
from standardwebhooks import Webhook

from controlplane.accounts.models import Project, Role, User
from controlplane.accounts.selectors import project_role_check
from controlplane.celery import app
from controlplane.errors import ValidationFailed
from controlplane.webhooks import network
from controlplane.webhooks.models import Delivery, DeliveryAttempt, DeliveryStatus, Endpoint, Event, EventType

log = logging.getLogger(__name__)

# How long a secret rotated out still signs, so receivers can switch without losing a message.
PREVIOUS_SECRET_HOURS = 24


def secret_new() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _event_types_check(event_types: list[str]) -> list[str]:
    unknown = sorted(set(event_types) - set(EventType.values))
    if unknown:
        raise ValidationFailed(
            f"Unknown event type {unknown[0]!r}; choose among {', '.join(EventType.values)}."
        )
    return sorted(set(event_types))


def endpoint_create(
    *, project: Project, user: User, url: str, event_types: list[str], description: str = ""
) -> Endpoint:
    project_role_check(user=user, project=project, role=Role.ADMIN)
    network.target_resolve(url)
    return Endpoint.objects.create(
        project=project,
        url=url,
        event_types=_event_types_check(event_types),
        description=description,
        secret=secret_new(),
        created_by=user,
    )


def endpoint_update(
    *,
    endpoint: Endpoint,
    user: User,
    url: str | None = None,
    event_types: list[str] | None = None,
    description: str | None = None,
    enabled: bool | None = None,
) -> Endpoint:
    project_role_check(user=user, project=endpoint.project, role=Role.ADMIN)
    if url is not None:
        network.target_resolve(url)
        endpoint.url = url
    if event_types is not None:
        endpoint.event_types = _event_types_check(event_types)
    if description is not None:
        endpoint.description = description
    if enabled is not None:
        endpoint.enabled = enabled
    endpoint.save()
    return endpoint


def endpoint_delete(*, endpoint: Endpoint, user: User) -> None:
    project_role_check(user=user, project=endpoint.project, role=Role.ADMIN)
    endpoint.delete()


def endpoint_secret_rotate(*, endpoint: Endpoint, user: User) -> Endpoint:
    """A new secret; the old one keeps signing (alongside) for PREVIOUS_SECRET_HOURS."""
    project_role_check(user=user, project=endpoint.project, role=Role.ADMIN)
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = timezone.now() + timedelta(hours=PREVIOUS_SECRET_HOURS)
    endpoint.secret = secret_new()
    endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at"])
    return endpoint


def _send_later(delivery_ids: list[int]) -> None:
    for delivery_id in delivery_ids:
        try:
            app.send_task("webhooks.delivery_send", args=[delivery_id], queue="control")
        except OperationalError:
            # The broker is away: webhooks.deliveries_send finds the delivery due and sends it.
            log.warning("webhook delivery %s not queued (broker away); the periodic sender will", delivery_id)


def event_emit(*, project: Project, type: EventType, key: str, data: dict[str, Any]) -> Event | None:
    """Put an event in the outbox with a delivery per subscribed endpoint; None if ``key`` was seen.

    Call it inside the transaction of the change it reports where there is one: the
    event commits with the change, and is sent after the commit.
    """
    endpoints = [e for e in Endpoint.objects.filter(project=project, enabled=True) if e.wants(type)]
    if not endpoints:
        return None
    with transaction.atomic():
        event, created = Event.objects.get_or_create(
            key=key, defaults={"project": project, "type": type, "data": data}
        )
        if not created:
            return None
        now = timezone.now()
        deliveries = Delivery.objects.bulk_create(
            Delivery(endpoint=e, event=event, message_id=f"msg_{uuid.uuid4().hex}", next_attempt_at=now)
            for e in endpoints
        )
        ids = [d.pk for d in deliveries]
        transaction.on_commit(lambda: _send_later(ids))
    return event


def _signature(endpoint: Endpoint, *, message_id: str, at: Any, body: bytes) -> str:
    keys = [endpoint.secret]
    if (
        endpoint.previous_secret
        and endpoint.previous_secret_expires_at
        and endpoint.previous_secret_expires_at > at
    ):
        keys.append(endpoint.previous_secret)
    return " ".join(Webhook(key).sign(msg_id=message_id, timestamp=at, data=body) for key in keys)


def message_body(event: Event) -> bytes:
    """The body of every message of ``event``: the Standard Webhooks envelope."""
    envelope = {"type": event.type, "timestamp": event.created_at.isoformat(), "data": event.data}
    return json.dumps(envelope, separators=(",", ":"), sort_keys=True).encode()


def delivery_send(*, delivery_id: int, requested_by: User | None = None) -> bool:
    """Make the delivery's next attempt if it is due; False if it is not (done, or another sender has it).

    Two senders (a redelivered task, the periodic sender) race by a conditional
    update of ``next_attempt_at``: the winner holds the attempt for the request's
    timeout and more, the loser returns. No transaction is open while sending.
    """
    now = timezone.now()
    lease = now + timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS + 30)
    won = Delivery.objects.filter(
        pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=lease)
    if not won:
        return False
    delivery = Delivery.objects.select_related("endpoint", "event").get(pk=delivery_id)
    endpoint, event = delivery.endpoint, delivery.event
    if not endpoint.enabled:
        answer = network.Answer(status=None, body="", error="the endpoint is disabled", duration_ms=0)
    else:
        body = message_body(event)
        try:
            target = network.target_resolve(endpoint.url)
        except ValidationFailed as exc:
            answer = network.Answer(status=None, body="", error=exc.message[:500], duration_ms=0)
        else:
            headers = {
                "content-type": "application/json",
                "user-agent": "Tuneyard-Webhooks/1",
                "webhook-id": delivery.message_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": _signature(endpoint, message_id=delivery.message_id, at=now, body=body),
            }
            answer = network.post(target, body=body, headers=headers)
    attempts = delivery.attempts + 1
    schedule = settings.WEBHOOK_RETRY_SECONDS
    if answer.ok:
        status, next_at = DeliveryStatus.SUCCEEDED, now
    elif attempts > len(schedule) or not endpoint.enabled:
        status, next_at = DeliveryStatus.FAILED, now
    else:
        status, next_at = DeliveryStatus.PENDING, timezone.now() + timedelta(seconds=schedule[attempts - 1])
    error = answer.error or ("" if answer.ok else f"answered {answer.status}")
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            delivery=delivery,
            requested_by=requested_by,
            response_status=answer.status,
            error=answer.error,
            response_body=answer.body,
            duration_ms=answer.duration_ms,
        )
        Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.PENDING).update(
            status=status,
            attempts=attempts,
            last_attempt_at=now,
            next_attempt_at=next_at,
            response_status=answer.status,
            last_error=error,
        )
    return True


def delivery_redeliver(*, delivery: Delivery, user: User) -> Delivery:
    """Send the same message (same ``webhook-id``) again now, whatever became of it before."""
    project_role_check(user=user, project=delivery.endpoint.project, role=Role.ADMIN)
    Delivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.PENDING, next_attempt_at=timezone.now()
    )
    delivery_send(delivery_id=delivery.pk, requested_by=user)
    delivery.refresh_from_db()
    return delivery


def deliveries_send_due(*, limit: int = 500) -> int:
    """Queue every delivery whose attempt is due: retries, and any lost between commit and queue.

    Queuing one twice is harmless: the attempt goes to whichever task claims it first.
    """
    due = list(
        Delivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=timezone.now())
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    _send_later(due)
    return len(due)
