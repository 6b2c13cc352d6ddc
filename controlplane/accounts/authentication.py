"""How a person's API token authenticates a REST request, and the scopes it carries.

DRF's settings name these classes, and DRF imports them while it defines
``APIView``, before ``controlplane.errors`` (which itself imports DRF's views) can
be imported. So this module imports no more than the models at its top; the
selectors and services it calls are imported when a request comes.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from rest_framework import authentication, permissions
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from controlplane.accounts.models import ApiToken, TokenScope, User

# The endpoints that decide a promotion: a token needs the approve scope for them (and its user
# the approver role, which the service checks), not the write scope of other POSTs.
APPROVE_ROUTES = frozenset({"api-promotion-approve", "api-promotion-reject"})


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Token <secret>`` (the CLI's header; workers send ``Bearer`` to the internal API)."""

    def authenticate(self, request: Request) -> tuple[User, ApiToken] | None:
        from controlplane.accounts.selectors import api_token_find  # see the module's docstring
        from controlplane.accounts.services import api_token_used

        scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "token":
            return None
        token = api_token_find(secret=secret.strip())
        if token is None:
            raise AuthenticationFailed("Unknown API token.")
        if token.revoked_at is not None:
            raise AuthenticationFailed(
                f"This API token ({token.prefix}…) was revoked on {token.revoked_at:%Y-%m-%d}."
            )
        if token.expired():
            raise AuthenticationFailed(
                f"This API token ({token.prefix}…) expired on {token.expires_at:%Y-%m-%d}; "
                "create another (POST /api/v1/auth/token, or the API tokens page)."
            )
        if not token.user.is_active:
            raise AuthenticationFailed("This API token's account is deactivated.")
        api_token_used(token=token)
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return "Token"


def scope_required(request: Request) -> TokenScope:
    match = request.resolver_match
    if match is not None and match.url_name in APPROVE_ROUTES:
        return TokenScope.APPROVE
    return TokenScope.READ if request.method in permissions.SAFE_METHODS else TokenScope.WRITE


class TokenScopePermission(permissions.IsAuthenticated):
    """The default permission: a signed-in caller; one that came with an API token must also hold
    the scope the request needs (read for safe methods, write for the others, approve to decide
    a promotion). A browser session holds every scope."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if not super().has_permission(request, view):
            return False
        token = request.auth
        if isinstance(token, ApiToken):
            needed = scope_required(request)
            if not token.has_scope(needed):
                raise PermissionDenied(
                    f"{request.method} {request.path} needs an API token with the {needed.value} scope; "
                    f"this one has {', '.join(token.scopes)}."
                )
        return True
