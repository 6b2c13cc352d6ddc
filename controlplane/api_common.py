"""What every REST module shares: the project parameter, request models and their parsing, the worker token.

Each endpoint declares one pydantic model of what it takes (its body, or its
query) and parses it once, here; services receive the typed values. The same
models are what the OpenAPI schema shows.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from django.conf import settings
from django.http import QueryDict
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel
from pydantic_core import PydanticCustomError
from rest_framework import authentication, permissions
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from controlplane.accounts.models import Project, Role
from controlplane.accounts.selectors import project_get
from controlplane.errors import ValidationFailed, pydantic_parse

log = logging.getLogger(__name__)


def project_from_request(request: Request, *, role: Role = Role.VIEWER) -> Project:
    slug = request.query_params.get("project")
    if not slug and request.method not in ("GET", "HEAD"):
        slug = request_body(request).get("project")
    if not slug or not isinstance(slug, str):
        raise ValidationFailed("Say which project: the 'project' parameter is required.")
    return project_get(user=request.user, slug=slug, role=role)


MAX_ID = 2**63 - 1  # the largest primary key PostgreSQL's bigint holds


def request_body(request: Request) -> Mapping[str, Any]:
    """The request's fields; a body that is not an object (a JSON list, a string) is a 400."""
    if not isinstance(request.data, Mapping):
        raise ValidationFailed("The body must be a JSON object (or form fields).")
    return request.data


def _flag(value: Any) -> Any:
    # A JSON boolean or a form's "true" / "false"; pydantic alone would also take "yes", "on" and 1.
    if value in ("true", "false"):
        return value == "true"
    if not isinstance(value, bool):
        raise PydanticCustomError("flag", "must be true or false")
    return value


Flag = Annotated[bool, BeforeValidator(_flag)]


def _whole(value: Any) -> Any:
    # A JSON integer or form text ("7"); pydantic alone would take true as 1 and 7.0 as 7.
    text = isinstance(value, str)
    digits = value.removeprefix("-") if text else ""
    if isinstance(value, bool | float) or (text and not (digits.isascii() and digits.isdigit())):
        raise PydanticCustomError("whole_number", "must be a whole number")
    return value


Whole = Annotated[int, BeforeValidator(_whole)]
# A row's id: what a database's bigint primary key holds.
Id = Annotated[Whole, Field(ge=1, le=MAX_ID)]
# A job's priority among its project's waiting jobs: higher goes first.
Priority = Annotated[Whole, Field(ge=-100, le=100, description="higher goes first")]


class RequestModel(BaseModel):
    """What one endpoint takes. Unknown fields are refused, so a typo is a 400, not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectRequest(RequestModel):
    # The project may be named in the body as well as in the query (it is resolved first).
    project: str | None = Field(default=None, max_length=64)


M = TypeVar("M", bound=BaseModel)


def body_parse(request: Request, model: type[M]) -> M:
    """The request's body (a JSON object or form fields) as ``model``; a 400 naming the first bad field.

    A ``RootModel`` of a tagged union (one endpoint taking several kinds) names
    the field without the tag, as the person wrote it.
    """
    data = request_body(request)
    data = data.dict() if isinstance(data, QueryDict) else data
    return pydantic_parse(model, data, tagged=issubclass(model, RootModel))


def query_parse(request: Request, model: type[M]) -> M:
    """The request's query parameters as ``model``; a 400 naming the first bad one."""
    return pydantic_parse(model, request.query_params.dict())


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class WorkerTokenAuthentication(authentication.BaseAuthentication):
    """Workers send ``Authorization: Bearer <WORKER_TOKEN>``; they hold no user account.

    The well-known development token is taken only on a laptop (``TUNEYARD_LAPTOP``)
    and only from loopback: anywhere else anyone could claim and finish jobs with it.
    """

    def authenticate(self, request: Request) -> tuple[None, str] | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        if not hmac.compare_digest(token.encode(), settings.WORKER_TOKEN.encode()):
            raise AuthenticationFailed("Invalid worker token.")
        if hmac.compare_digest(token.encode(), settings._DEV_WORKER_TOKEN.encode()):
            address = request.META.get("REMOTE_ADDR", "")
            if not (settings.LAPTOP_MODE and _loopback(address)):
                log.warning(
                    "Refused the development worker token from %s: it works only on a laptop "
                    "(TUNEYARD_LAPTOP=true) from 127.0.0.1 or ::1. Set WORKER_TOKEN to a secret of "
                    "your own on the control plane and its workers.",
                    address or "an unknown address",
                )
                raise AuthenticationFailed(
                    "The development worker token works only on a laptop, from loopback: set WORKER_TOKEN."
                )
        return (None, "worker")

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"


class IsWorker(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return request.auth == "worker"
