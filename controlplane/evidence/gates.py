"""Gate policies and their verdict on a promotion: absolute, champion-relative and governance rules."""

from __future__ import annotations

from controlplane.registry.models import Promotion, PromotionStatus


def approval_blockers(promotion: Promotion) -> list[str]:
    """Why ``promotion`` may not be approved now: each failing or pending rule, one sentence each."""
    return []


def promotion_changed(promotion_id: int, status: PromotionStatus) -> None:
    """On a decision, keep the gate's verdict (``GateCheck``) in the decision's transaction."""
