"""The one rule for names people give things (datasets, base models, model versions)."""

from __future__ import annotations

import re

from controlplane.errors import ValidationFailed

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")


def name_check(value: object, *, what: str) -> str:
    """``value`` if it is a valid name, else a ValidationFailed that says the rule."""
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise ValidationFailed(
            f"A {what} name is 1-100 lowercase letters, digits, '-' or '_', starting with a letter or digit."
        )
    return value
