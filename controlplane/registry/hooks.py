"""The seam through which higher apps hear of promotions, so that the registry never imports them.

An app above the registry (webhooks, evidence) registers here from its
``AppConfig.ready()``. A ``promotion_changed`` listener runs inside the
transaction that changed the promotion, so what it writes (an outbox row, a
gate check, a model card) commits or rolls back with the change; it must only
write to the database, never call out (what must go out goes on commit).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from controlplane.registry.models import PromotionStatus

if TYPE_CHECKING:
    from controlplane.registry.models import Promotion

# (promotion id, the status it just took), inside the transaction of the change.
PromotionChanged = Callable[[int, PromotionStatus], None]
# Why ``promotion`` may not be approved now (a failing or pending gate rule), one sentence each;
# empty when nothing stands in the way. Reads committed data only; called before the decision.
ApprovalCheck = Callable[["Promotion"], list[str]]

_promotion_changed: list[PromotionChanged] = []
_approval_checks: list[ApprovalCheck] = []


def on_promotion_changed(listener: PromotionChanged) -> None:
    """Listeners run in the order they registered."""
    if listener not in _promotion_changed:
        _promotion_changed.append(listener)


def on_approval_check(check: ApprovalCheck) -> None:
    if check not in _approval_checks:
        _approval_checks.append(check)


def promotion_changed(promotion_id: int, status: PromotionStatus) -> None:
    for listener in _promotion_changed:
        listener(promotion_id, status)


def approval_blockers(promotion: Promotion) -> list[str]:
    """Every registered check's reasons against approving ``promotion``, in registration order."""
    return [reason for check in _approval_checks for reason in check(promotion)]
