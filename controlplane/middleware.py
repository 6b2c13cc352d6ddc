"""Refuses text that no database column can hold, before any view sees it.

PostgreSQL text cannot contain NUL characters; a NUL in a query parameter, a
form field or a JSON body would otherwise surface as a 500 deep inside a
query. One check here covers every view, page and API alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

MESSAGE = "Text may not contain NUL (\\0) characters."


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def _request_has_nul(request: HttpRequest) -> bool:
    if "\x00" in request.path or any(_has_nul(v) for v in request.GET.lists()):
        return True
    if request.method not in ("POST", "PUT", "PATCH"):
        return False
    if request.content_type == "application/json":
        try:
            return _has_nul(json.loads(request.body or b"null"))
        except (ValueError, UnicodeDecodeError):
            return False  # malformed JSON: the parser's own 400 says so
    if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return any(_has_nul(key) or _has_nul(values) for key, values in request.POST.lists())
    return False


class NulCharacterGuard:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _request_has_nul(request):
            if request.path.startswith(("/api/", "/internal/")):
                return JsonResponse({"error": "validation_failed", "message": MESSAGE}, status=400)
            return HttpResponseBadRequest(MESSAGE)
        return self.get_response(request)
