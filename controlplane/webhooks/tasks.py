"""Celery entry points of webhooks: thin, each calls one service."""

from __future__ import annotations

from celery import shared_task

from controlplane.webhooks import listeners, services


@shared_task(name="webhooks.delivery_send")
def delivery_send(delivery_id: int) -> bool:
    return services.delivery_send(delivery_id=delivery_id)


@shared_task(name="webhooks.deliveries_send")
def deliveries_send() -> dict[str, int]:
    """Periodic: what the hooks missed goes into the outbox; what is due is sent."""
    return {"reconciled": listeners.events_reconcile(), "queued": services.deliveries_send_due()}
