"""What can be wrong with a dataset file, and the report that names it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ProblemKind(StrEnum):
    ENCODING = "encoding"
    SYNTAX = "syntax"
    NOT_AN_OBJECT = "not_an_object"
    MISSING = "missing"
    EMPTY = "empty"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_FIELD = "unknown_field"
    UNKNOWN_ROLE = "unknown_role"
    BAD_ANSWER = "bad_answer"
    TOO_LONG = "too_long"
    # Bytes, where TOO_LONG counts a tokenizer's tokens: a value or a row past the ingest's bounds.
    TOO_LARGE = "too_large"
    NUL_CHARACTER = "nul_character"
    # A preference row whose chosen answer is its rejected one prefers nothing.
    NO_PREFERENCE = "no_preference"


def clipped(text: str, most: int = 200) -> str:
    """Text from a file (a column name, a reader's error quoting a row) short enough for a message."""
    return text if len(text) <= most else text[:most] + "…"


class IngestRefused(Exception):
    """The file as a whole cannot be read (a bomb, a bad archive, an unknown schema)."""

    def __init__(self, message: str, *, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.report = report


class RowsInvalid(IngestRefused):
    """Some rows break their schema; the report names them."""


class ReadStopped(Exception):
    """A row the reader cannot get past (one too long to hold): reported like any bad row, as the
    last one, since nothing after it is read."""

    def __init__(self, kind: ProblemKind, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.kind = kind
        self.where = where
        self.reason = reason


@dataclass
class ProblemReport:
    """Counts of every problem, and the first few of each kind with their row numbers."""

    examples_per_kind: int = 20
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: ProblemKind, where: str, reason: str) -> None:
        self.counts[kind.value] = self.counts.get(kind.value, 0) + 1
        shown = self.examples.setdefault(kind.value, [])
        if len(shown) < self.examples_per_kind:
            shown.append(f"{where}: {reason}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def first(self) -> str:
        return next(iter(self.examples.values()))[0]

    def as_dict(self) -> dict[str, Any]:
        return {"error_count": self.total, "counts": dict(self.counts), "examples": dict(self.examples)}

    def summary(self) -> str:
        """One sentence for a page or an API answer; the details carry the rest."""
        more = self.total - 1
        tail = f" (and {more} more)" if more else ""
        return f"{self.total} bad row(s); nothing was stored. {self.first()}{tail}"
