"""Keyset pages for the REST API's lists: ``{"results": [...], "next": <url> | null}``.

A page is the rows after a cursor (the last row's id) in id order, so a row
added or removed between two requests never shifts a page: nothing is seen
twice or skipped. ``limit`` (1 to 500, default 100) sets the page's size. The
job list has its own cursor, sorted by any column (training.selectors.job_search).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.db.models import Model, QuerySet
from drf_spectacular.utils import OpenApiParameter
from rest_framework.request import Request

from controlplane.errors import ValidationFailed

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
PARAMETERS = [
    OpenApiParameter("cursor", str, description="the `next` of the previous page carries it"),
    OpenApiParameter("limit", int, description=f"rows per page, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})"),
]

M = TypeVar("M", bound=Model)


def _whole(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) < 19):
        raise ValidationFailed(f"{name}: must be a whole number, as the previous page's next gives it.")
    return int(raw)


def page_answer(
    request: Request,
    rows: QuerySet[M],
    serialize: Callable[[list[M]], Any],
    *,
    newest_first: bool = True,
) -> dict[str, Any]:
    """One page of ``rows`` in id order (newest first unless told), with the link to the next."""
    limit = _whole(request, "limit")
    limit = DEFAULT_LIMIT if limit is None else limit
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed(f"limit: must be between 1 and {MAX_LIMIT}.")
    after = _whole(request, "cursor")
    rows = rows.order_by("-pk" if newest_first else "pk")
    if after is not None:
        rows = rows.filter(pk__lt=after) if newest_first else rows.filter(pk__gt=after)
    chunk = list(rows[: limit + 1])
    more, chunk = len(chunk) > limit, chunk[:limit]
    next_url = None
    if more:
        query = request.query_params.copy()
        query["cursor"] = str(chunk[-1].pk)
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return {"results": serialize(chunk), "next": next_url}
