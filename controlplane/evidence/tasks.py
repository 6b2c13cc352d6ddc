"""Celery entry points of the evidence app: thin, each calls one service."""

from __future__ import annotations

from celery import shared_task

from controlplane.evidence import cards


@shared_task(name="evidence.model_cards_publish")
def model_cards_publish() -> dict[str, int]:
    """Send MLflow the model cards its on-commit send missed (MLflow was down at the approval)."""
    return cards.model_cards_publish()
