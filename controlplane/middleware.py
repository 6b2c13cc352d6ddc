"""Refuses input no view should see: JSON nested too deeply, and text no database column can hold.

A JSON body is bounded before it is parsed: one over DATA_UPLOAD_MAX_MEMORY_SIZE
is refused by Django as it is read (its Content-Length alone decides), and one
whose arrays and objects nest deeper than API_JSON_MAX_DEPTH is refused here by
counting brackets, since every JSON parser recurses once per level (DRF's,
``json.loads`` below) and a few hundred levels would be a RecursionError.

PostgreSQL text cannot contain NUL characters, and no UTF-8 column can hold a
lone surrogate (JSON allows "\\ud800"); either in a query parameter, a form
field or a JSON body would otherwise surface as a 500 deep inside a query.
One check here covers every view, page and API alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from itertools import accumulate
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from rest_framework.parsers import JSONParser
from rest_framework.utils.mediatypes import media_type_matches

from controlplane.errors import DomainError, MalformedRequest, ValidationFailed, error_json, is_api_path

MESSAGE = "Text may not contain NUL (\\0) characters or unpaired surrogates."

# What does not nest: a string (escapes and all; one left open runs to the end, as a parser would
# read it), or a run of anything but brackets and quotes. What is left is the brackets alone.
_NOT_NESTING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[^"\[\]{}]+', re.DOTALL)
_NESTING_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest, counted without parsing it (no recursion)."""
    brackets = _NOT_NESTING.sub("", text)
    return max(accumulate(map(_NESTING_STEP.__getitem__, brackets), initial=0))


def _storable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _unstorable(value: Any) -> bool:
    """True if any text in ``value`` (a string, or nested lists, tuples and dicts of them) is unstorable."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not _storable(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return False


def _json_body_check(request: HttpRequest) -> None:
    # request.body refuses a body over DATA_UPLOAD_MAX_MEMORY_SIZE (RequestDataTooBig, answered
    # 413 by controlplane.errors) before reading it; DRF then parses these same bytes.
    body = request.body
    try:
        # Decoded as DRF's parser will decode it.
        text = body.decode(request.encoding or settings.DEFAULT_CHARSET)
    except UnicodeDecodeError:
        return  # not text: the parser's own 400 says so
    except LookupError:
        raise MalformedRequest(f"The body's charset {request.encoding!r} is not a text encoding.") from None
    limit = settings.API_JSON_MAX_DEPTH
    if json_depth(text) > limit:
        raise MalformedRequest(f"The JSON body nests arrays and objects deeper than {limit} levels.")
    try:
        data = json.loads(text or "null")
    except ValueError:
        return  # malformed JSON: the parser's own 400 says so
    if _unstorable(data):
        raise ValidationFailed(MESSAGE)


def _request_check(request: HttpRequest) -> None:
    """Raises a DomainError for a request no view should see."""
    if not _storable(request.path) or _unstorable(list(request.GET.lists())):
        raise ValidationFailed(MESSAGE)
    # Whatever DRF's JSON parser would take ("application/json", but also "*/*" or "application/*").
    if media_type_matches(JSONParser.media_type, request.META.get("CONTENT_TYPE", "")):
        _json_body_check(request)
    elif request.method == "POST" and request.content_type in (
        "multipart/form-data",
        "application/x-www-form-urlencoded",
    ):
        # Django refuses too many fields or too large a form as it parses (answered by controlplane.errors).
        if _unstorable(list(request.POST.lists())):
            raise ValidationFailed(MESSAGE)


class UnstorableTextGuard:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            _request_check(request)
        except DomainError as exc:
            if is_api_path(request.path):
                return error_json(exc)
            return HttpResponse(exc.message, status=exc.status)
        return self.get_response(request)
