"""Refuses text that no database column can hold, before any view sees it.

PostgreSQL text cannot contain NUL characters, and no UTF-8 column can hold a
lone surrogate (JSON allows "\\ud800"); either in a query parameter, a form
field or a JSON body would otherwise surface as a 500 deep inside a query.
One check here covers every view, page and API alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

MESSAGE = "Text may not contain NUL (\\0) characters or unpaired surrogates."


def _storable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _unstorable(value: Any) -> bool:
    """True if any text in ``value`` (a string, or lists, tuples and dicts of them) cannot be stored."""
    if isinstance(value, str):
        return not _storable(value)
    if isinstance(value, dict):
        return any(_unstorable(k) or _unstorable(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_unstorable(item) for item in value)
    return False


def _request_unstorable(request: HttpRequest) -> bool:
    if not _storable(request.path) or _unstorable(list(request.GET.lists())):
        return True
    if request.method not in ("POST", "PUT", "PATCH"):
        return False
    if request.content_type == "application/json":
        try:
            return _unstorable(json.loads(request.body or b"null"))
        except (ValueError, UnicodeDecodeError):
            return False  # malformed JSON: the parser's own 400 says so
    if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return _unstorable(list(request.POST.lists()))
    return False


class UnstorableTextGuard:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _request_unstorable(request):
            if request.path.startswith(("/api/", "/internal/")):
                return JsonResponse({"error": "validation_failed", "message": MESSAGE}, status=400)
            return HttpResponseBadRequest(MESSAGE)
        return self.get_response(request)
