"""Domain errors and the one place that turns them into HTTP answers.

Services raise these; the API answers ``{"error": code, "message": ...}`` with
the error's status, and pages show the message. Nothing else maps errors.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, Concatenate, ParamSpec, TypeVar

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler


class DomainError(Exception):
    code = "error"
    status = 400

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ValidationFailed(DomainError):
    code = "validation_failed"
    status = 400


class Forbidden(DomainError):
    code = "forbidden"
    status = 403


class NotFound(DomainError):
    code = "not_found"
    status = 404


class Conflict(DomainError):
    code = "conflict"
    status = 409


class InvalidTransition(Conflict):
    code = "invalid_transition"


class ServiceUnavailable(DomainError):
    """A dependency (MLflow, the broker) did not answer; trying again may work."""

    code = "unavailable"
    status = 503


M = TypeVar("M", bound=BaseModel)


def pydantic_parse(model: type[M], data: Any, *, field: str = "", tagged: bool = False) -> M:
    """``model`` from ``data``, or a ValidationFailed naming the first bad field (under ``field``).

    ``tagged``: ``model`` is a tagged union, whose errors start with the tag of
    the member that was tried; the field is named without it.
    """
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"][1:] if tagged and first["type"] != "union_tag_invalid" else first["loc"]
        where = ".".join([field, *(str(part) for part in loc)] if field else map(str, loc))
        raise ValidationFailed(
            f"{where or 'body'}: {first['msg']}",
            details=exc.errors(include_url=False, include_context=False, include_input=False),
        ) from exc


def _body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": code, "message": message}
    if details is not None:
        body["details"] = details
    return body


def _first_message(detail: Any) -> str:
    """A sentence out of DRF's nested error detail: the first field and its first complaint."""
    if isinstance(detail, dict):
        for field, value in detail.items():
            inner = _first_message(value)
            return inner if field == "non_field_errors" else f"{field}: {inner}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        return Response(_body(exc.code, exc.message, exc.details), status=exc.status)
    if isinstance(exc, Http404):
        return Response(_body("not_found", "Not found."), status=404)
    if isinstance(exc, PermissionDenied):
        return Response(_body("forbidden", str(exc) or "Forbidden."), status=403)
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, drf_exceptions.ValidationError):
        response.data = _body("validation_failed", _first_message(exc.detail), exc.detail)
    elif isinstance(exc, drf_exceptions.APIException):
        response.data = _body(exc.default_code, _first_message(exc.detail))
    return response


_Request = TypeVar("_Request", bound=HttpRequest)
_Params = ParamSpec("_Params")


def page_errors(
    view: Callable[Concatenate[_Request, _Params], HttpResponse],
) -> Callable[Concatenate[_Request, _Params], HttpResponse]:
    """For HTML views: not-found and forbidden become 404 / 403 pages; any other
    domain error becomes a message on the page the person came from."""

    @wraps(view)
    def wrapper(request: _Request, *args: _Params.args, **kwargs: _Params.kwargs) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except NotFound as exc:
            raise Http404(exc.message) from exc
        except Forbidden as exc:
            raise PermissionDenied(exc.message) from exc
        except DomainError as exc:
            messages.error(request, exc.message)
            back = request.headers.get("Referer", "")
            if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
                back = request.path
            return redirect(back)

    return wrapper
