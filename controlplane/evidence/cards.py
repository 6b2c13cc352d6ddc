"""The model card written when a promotion is approved (Markdown and JSON), and its reads."""

from __future__ import annotations

from controlplane.registry.models import PromotionStatus


def promotion_changed(promotion_id: int, status: PromotionStatus) -> None:
    """On approval, write the card in the approval's transaction (MLflow gets it on commit)."""
