"""Domain errors and the one place that turns them into HTTP answers.

Services raise these; the API answers ``{"error": code, "message": ...}`` with
the error's status, and pages show the message. Nothing else maps errors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any, Concatenate, ParamSpec, TypeVar

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import redirect, render
from django.template import loader
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import defaults
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

logger = logging.getLogger(__name__)


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


class MalformedRequest(DomainError):
    """The request itself cannot be read: nested too deeply, too many fields, a broken multipart body."""

    code = "bad_request"
    status = 400


class TooLarge(DomainError):
    code = "too_large"
    status = 413


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


# --- Django's own refusals (urls.handler400 and the others) ---------------------------------------
#
# Some requests never reach a view, or are refused by Django as it reads them: an unknown URL, a
# body over DATA_UPLOAD_MAX_MEMORY_SIZE, a form with too many fields, a multipart body it cannot
# parse, an exception no one caught. The API answers those in its own shape too; pages answer with
# the site's own page (frontend/templates/<status>.html, in the site's layout, with a way home).

API_PREFIXES = ("/api/", "/internal/")


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES)


def error_json(exc: DomainError) -> JsonResponse:
    """A domain error as the API answers it, for code outside DRF (middleware, Django's handlers)."""
    return JsonResponse(_body(exc.code, exc.message, exc.details), status=exc.status)


def _request_refusal(exception: Exception) -> DomainError:
    """Django's refusal of a request as it read it, as the domain error the API answers with."""
    if isinstance(exception, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0
        return TooLarge(f"The request body is larger than the limit of {limit / 1024**2:g} MiB.")
    if isinstance(exception, TooManyFieldsSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        return MalformedRequest(f"The request has more fields than the limit of {limit}.")
    if isinstance(exception, TooManyFilesSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FILES
        return MalformedRequest(f"The request has more files than the limit of {limit}.")
    if isinstance(exception, MultiPartParserError):
        # Django's parser says what is wrong with the body's framing (never anything of the server's).
        return MalformedRequest(f"The multipart body cannot be read: {str(exception).rstrip('.')}.")
    return MalformedRequest("The request cannot be understood.")


def _error_page(request: HttpRequest, status: int, message: str = "") -> HttpResponse:
    """The site's page for a refusal. ``message`` is shown only where it is meant for the reader (a
    domain error's, which says what role is missing); Django's own texts name URL patterns."""
    try:
        return render(request, f"{status}.html", {"message": message}, status=status)
    except Exception:  # noqa: BLE001  (the page itself failed: a database away; say something still)
        logger.exception("the %s page could not be rendered", status)
        return HttpResponse(f"<h1>{status}</h1>", status=status)


def bad_request_answer(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request.path):
        return error_json(_request_refusal(exception))
    return _error_page(request, 400, _request_refusal(exception).message)


def permission_denied_answer(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request.path):
        return error_json(Forbidden(str(exception) or "Forbidden."))
    # page_errors raises PermissionDenied with a Forbidden's message, written for people.
    return _error_page(request, 403, str(exception))


def not_found_answer(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request.path):
        return error_json(NotFound("Not found."))
    return _error_page(request, 404)


def server_error_answer(request: HttpRequest) -> HttpResponse:
    # Nothing of the failure goes out: it is in the server's log.
    if is_api_path(request.path):
        body = _body("internal", "The server failed to answer this request; the failure has been logged.")
        return JsonResponse(body, status=500)
    # Rendered without the request's context: whatever failed (the database, a context processor)
    # must not fail this page too.
    try:
        return HttpResponse(loader.get_template("500.html").render({}), status=500)
    except Exception:  # noqa: BLE001
        logger.exception("the 500 page could not be rendered")
        return defaults.server_error(request)


def csrf_failure_answer(request: HttpRequest, reason: str = "") -> HttpResponse:
    """settings.CSRF_FAILURE_VIEW: a form posted without its token, often one left open past the session."""
    if is_api_path(request.path):
        return error_json(Forbidden(f"CSRF check failed: {reason}" if reason else "CSRF check failed."))
    return _error_page(
        request, 403, "This form was sent without a valid security token: reload the page and try again."
    )
