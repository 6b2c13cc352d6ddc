"""Celery entry points of the idempotency app: thin, each calls one service."""

from __future__ import annotations

from celery import shared_task

from controlplane.idempotency import services


@shared_task(name="idempotency.records_expire")
def records_expire() -> int:
    return services.records_expire()
