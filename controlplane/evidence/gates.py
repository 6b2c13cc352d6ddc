"""Gate policies and their verdict on a promotion: absolute, champion-relative and governance rules."""

from __future__ import annotations

from controlplane.registry.models import Promotion, PromotionStatus


def approval_blockers(promotion: Promotion) -> list[str]:
    """Why ``promotion`` may not be approved now: each failing or pending rule, one sentence each."""
    return []


def promotion_changed(promotion_id: int, status: PromotionStatus) -> None:
    """On a decision, keep the gate's verdict (``GateCheck``) in the decision's transaction."""


def gate_report(*, promotion: Promotion) -> object | None:
    """Every rule of the promotion's gate with its figures and pass / fail / pending: the kept
    ``GateCheck`` once decided, computed from committed data before. None when no policy applies.
    Rendered by ``evidence/_gates.html`` as ``gate_report``."""
    return None
