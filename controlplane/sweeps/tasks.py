"""Celery entry points of sweeps: thin, each calls one service."""

from __future__ import annotations

from celery import shared_task

from controlplane.sweeps import services


@shared_task(name="sweeps.reconcile")
def sweeps_reconcile() -> int:
    return services.sweeps_reconcile()
