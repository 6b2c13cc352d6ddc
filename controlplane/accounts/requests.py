"""The request types of the pages and API methods that only a signed-in user reaches.

They are types, never built: a page under ``login_required`` or an API method
under ``IsAuthenticated`` (the default permission) runs only once Django or DRF
has turned an anonymous caller away, so its ``request.user`` is a ``User``.
Annotating the request with them states that, instead of narrowing it at every use.
"""

from __future__ import annotations

from django.http import HttpRequest
from rest_framework.request import Request

from controlplane.accounts.models import User


class AuthenticatedHttpRequest(HttpRequest):
    """A page's request under ``login_required``."""

    user: User


class AuthenticatedRequest(Request):
    """An API request under ``IsAuthenticated``."""

    user: User
