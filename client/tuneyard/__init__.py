"""Tuneyard's Python client (see tuneyard.client for an example)."""

from __future__ import annotations

from tuneyard.client import Client
from tuneyard.errors import (
    Conflict,
    Forbidden,
    Invalid,
    JobFailed,
    NotFound,
    TuneyardError,
    Unauthorized,
    Unreachable,
)

__all__ = [
    "Client",
    "Conflict",
    "Forbidden",
    "Invalid",
    "JobFailed",
    "NotFound",
    "TuneyardError",
    "Unauthorized",
    "Unreachable",
]
