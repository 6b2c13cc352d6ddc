"""Blind side-by-side review: the challenger's and the champion's answers, sides hidden, votes."""

from __future__ import annotations

from controlplane.accounts.models import User
from controlplane.registry.models import Promotion


def review_context(*, promotion: Promotion, user: User) -> object | None:
    """What ``evidence/_review.html`` shows ``user`` as ``review``: the prompts to vote on, the
    tally once voted. None when the promotion has no suite answers to compare."""
    return None
