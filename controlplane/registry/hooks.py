"""The seam through which higher apps hear of promotions, so that the registry never imports them.

An app above the registry (webhooks, for one) registers here from its
``AppConfig.ready()``. A listener runs inside the transaction that changed the
promotion, so what it writes (an outbox row) commits or rolls back with the
change; it must only write to the database, never call out.
"""

from __future__ import annotations

from collections.abc import Callable

from controlplane.registry.models import PromotionStatus

# (promotion id, the status it just took), inside the transaction of the change.
PromotionChanged = Callable[[int, PromotionStatus], None]

_promotion_changed: list[PromotionChanged] = []


def on_promotion_changed(listener: PromotionChanged) -> None:
    if listener not in _promotion_changed:
        _promotion_changed.append(listener)


def promotion_changed(promotion_id: int, status: PromotionStatus) -> None:
    for listener in _promotion_changed:
        listener(promotion_id, status)
