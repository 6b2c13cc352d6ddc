"""Celery entry points of the registry: thin, each calls one service."""

from __future__ import annotations

from celery import shared_task

from controlplane.registry import services


@shared_task(name="registry.reconcile")
def registry_reconcile() -> dict[str, int]:
    return services.registry_reconcile()
