"""Celery entry points of the control plane: thin, each calls one service."""

from __future__ import annotations

from celery import shared_task

from controlplane.training import services


@shared_task(name="training.jobs_redispatch_unclaimed")
def jobs_redispatch_unclaimed() -> int:
    return services.jobs_redispatch_unclaimed()


@shared_task(name="training.jobs_recover_lost")
def jobs_recover_lost() -> dict[str, int]:
    return services.jobs_recover_lost()
