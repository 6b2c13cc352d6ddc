"""What every REST module shares: the project parameter, body parsing, the worker token."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework import authentication, permissions
from rest_framework.request import Request

from controlplane.accounts.models import Project, Role
from controlplane.accounts.selectors import project_get
from controlplane.errors import ValidationFailed


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


def int_field(data: Mapping[str, Any], name: str) -> int:
    """A positive integer id from a field: 7 or "7", never 7.5, true or "7abc"."""
    value = data.get(name)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationFailed(f"'{name}' is required and must be an integer id.")
    if not 1 <= value <= MAX_ID:
        raise ValidationFailed(f"'{name}' must be a positive id.")
    return value


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
