"""What every REST module shares: the project parameter, body parsing, the worker token."""

from __future__ import annotations

import hmac
from typing import Any, TypeVar

from django.conf import settings
from pydantic import BaseModel, ValidationError
from rest_framework import authentication, permissions
from rest_framework.request import Request

from controlplane.accounts.models import Project, Role
from controlplane.accounts.selectors import project_get
from controlplane.errors import ValidationFailed

M = TypeVar("M", bound=BaseModel)


def project_from_request(request: Request, *, role: Role = Role.VIEWER) -> Project:
    slug = request.query_params.get("project") or (
        request.data.get("project") if hasattr(request.data, "get") else None
    )
    if not slug:
        raise ValidationFailed("Say which project: the 'project' parameter is required.")
    return project_get(user=request.user, slug=str(slug), role=role)


def body_parse(model: type[M], data: Any) -> M:
    """A pydantic model from a request body; a bad body is a 400 naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise ValidationFailed(
            f"{where}: {first['msg']}",
            details=exc.errors(include_url=False, include_context=False, include_input=False),
        ) from exc


def int_field(data: Any, name: str) -> int:
    value = data.get(name) if hasattr(data, "get") else None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValidationFailed(f"'{name}' is required and must be an integer id.") from None
    if number < 1:
        raise ValidationFailed(f"'{name}' must be a positive id.")
    return number


class WorkerTokenAuthentication(authentication.BaseAuthentication):
    """Workers send ``Authorization: Bearer <WORKER_TOKEN>``; they hold no user account."""

    def authenticate(self, request: Request):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        if not hmac.compare_digest(token.encode(), settings.WORKER_TOKEN.encode()):
            from rest_framework.exceptions import AuthenticationFailed

            raise AuthenticationFailed("Invalid worker token.")
        return (None, "worker")

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"


class IsWorker(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return request.auth == "worker"
