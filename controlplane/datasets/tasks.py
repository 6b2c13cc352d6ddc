"""Celery entry points of the datasets app, run by the control worker: thin, each calls one service."""

from __future__ import annotations

from celery import shared_task

from controlplane.datasets import services
from controlplane.datasets.services import uploads


@shared_task(name="datasets.operation_run")
def dataset_operation_run(operation_id: int) -> str:
    return services.dataset_operation_run(operation_id=operation_id).status


@shared_task(name="datasets.operations_reconcile")
def dataset_operations_reconcile() -> dict[str, int]:
    return services.dataset_operations_reconcile()


@shared_task(name="datasets.uploads_expire")
def uploads_expire() -> int:
    return uploads.uploads_expire()
