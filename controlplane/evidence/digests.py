"""The one way evidence is named by content: SHA-256 of canonical JSON.

A suite version, a suite run's results, a gate's verdict, the review's votes and the model card
are each cited by the digest of their canonical JSON, so a card proves what the approver saw.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite number (a NaN loss, SQLite lets one through) as None: JSON has none."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(inner) for inner in value]
    return value


def canonical_json(data: Any) -> bytes:
    """The one byte string a JSON value has: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def digest_of(data: Any) -> str:
    """SHA-256 (hex) of ``data``'s canonical JSON; store ``json_safe(data)`` beside it."""
    return hashlib.sha256(canonical_json(data)).hexdigest()
