"""The blind review's arithmetic, pure: which side shows the challenger, a vote in the challenger's
terms, and the tally with its Wilson interval."""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from django.conf import settings

from controlplane.evidence.models import Vote

Side = Literal["a", "b"]
Verdict = Literal["challenger", "champion", "tie"]
VERDICTS: tuple[Verdict, ...] = ("challenger", "champion", "tie")

# z for a two-sided 95% interval.
Z95 = 1.959963984540054


def challenger_side(*, promotion_id: int, task: str, row: int) -> Side:
    """Which side shows the challenger on this prompt: an HMAC keyed by the site's secret, so it
    is fixed per (promotion, task, row) and about half the prompts put the challenger on each side."""
    message = f"review-side\x1f{promotion_id}\x1f{task}\x1f{row}".encode()
    digest = hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).digest()
    return "a" if digest[0] & 1 == 0 else "b"


def wilson_interval(successes: float, n: int, *, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (``successes`` of ``n``; a tie counts a half).

    Chosen over the normal approximation because it stays inside [0, 1] and keeps its coverage
    for the few dozen votes a review gets, and over a bootstrap because it is exact and cheap.
    """
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def vote_verdict(*, vote: str, challenger_side: str) -> Verdict:
    """A vote in the challenger's terms, whatever side the voter saw it on."""
    if vote == Vote.TIE:
        return "tie"
    return "challenger" if vote == challenger_side else "champion"


@dataclass(frozen=True)
class Tally:
    """The challenger's record over the votes: win rate = (wins + ties / 2) / votes, with its
    95% Wilson interval."""

    votes: int
    wins: int
    ties: int
    losses: int
    win_rate: float | None
    low: float
    high: float

    @classmethod
    def of(cls, verdicts: Iterable[str]) -> Tally:
        counted = list(verdicts)
        wins, ties = counted.count("challenger"), counted.count("tie")
        n = len(counted)
        score = wins + ties / 2
        low, high = wilson_interval(score, n)
        return cls(n, wins, ties, n - wins - ties, score / n if n else None, low, high)

    # Percentages for the drawn interval (SVG attributes, 0-100).
    @property
    def low_pct(self) -> str:
        return f"{self.low * 100:.1f}"

    @property
    def high_pct(self) -> str:
        return f"{self.high * 100:.1f}"

    @property
    def width_pct(self) -> str:
        return f"{(self.high - self.low) * 100:.1f}"

    @property
    def rate_pct(self) -> str:
        return f"{(self.win_rate or 0) * 100:.1f}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "votes": self.votes,
            "wins": self.wins,
            "ties": self.ties,
            "losses": self.losses,
            "win_rate": self.win_rate,
            "ci_low": self.low,
            "ci_high": self.high,
            "interval": "wilson-95",
        }
