"""Every write to accounts: creating projects, adding members, creating and revoking API tokens."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from controlplane.accounts.models import (
    TOKEN_NAME_MAX,
    TOKEN_PREFIX,
    ApiToken,
    Membership,
    Project,
    Role,
    TokenScope,
    User,
)
from controlplane.errors import Forbidden, ValidationFailed


@transaction.atomic
def project_create(*, slug: str, name: str) -> Project:
    project, _ = Project.objects.get_or_create(slug=slug, defaults={"name": name})
    return project


@transaction.atomic
def member_add(*, project: Project, username: str, role: Role, password: str | None = None) -> User:
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=username)
    if created and password:
        user.set_password(password)
        user.save(update_fields=["password"])
    Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
    return user


# A token's last use is written at most this often, so a busy pipeline does not write on every request.
TOKEN_USE_RESOLUTION = timedelta(minutes=1)


def _scopes_order(scopes: Iterable[TokenScope]) -> list[str]:
    given = set(scopes)
    return [scope.value for scope in TokenScope if scope in given]


def api_token_create(
    *,
    user: User,
    name: str,
    scopes: Iterable[TokenScope],
    expires_in_days: int | None = None,
    issuer: ApiToken | None = None,
) -> tuple[ApiToken, str]:
    """A new token and its secret, which is not kept and cannot be shown again.

    ``issuer``: the token the request came with, if it came with one. A token
    cannot make one with a scope it lacks, nor one that outlives it (the default
    lifetime is cut to its own).
    """
    name = name.strip()
    if not name:
        raise ValidationFailed("name: give the token a name (what or who uses it).")
    if len(name) > TOKEN_NAME_MAX:
        raise ValidationFailed(f"name: at most {TOKEN_NAME_MAX} characters.")
    wanted = _scopes_order(scopes)
    if not wanted:
        raise ValidationFailed(f"scopes: name at least one of {', '.join(TokenScope.values)}.")
    most = settings.API_TOKEN_MAX_DAYS
    if expires_in_days is not None and not 1 <= expires_in_days <= most:
        raise ValidationFailed(f"expires_in_days: between 1 and {most} days.")
    now = timezone.now()
    expires_at = now + timedelta(days=expires_in_days or settings.API_TOKEN_DEFAULT_DAYS)
    if issuer is not None:
        beyond = [scope for scope in wanted if scope not in issuer.scopes]
        if beyond:
            raise Forbidden(
                f"The token you sent has the {', '.join(issuer.scopes)} scope(s); a token it creates "
                f"cannot have more, and {', '.join(beyond)} was asked for."
            )
        if expires_at > issuer.expires_at:
            if expires_in_days is not None:
                raise ValidationFailed(
                    f"expires_in_days: the token you sent expires on {issuer.expires_at:%Y-%m-%d %H:%M} UTC, "
                    "and a token it creates cannot outlive it."
                )
            expires_at = issuer.expires_at
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=secret[: len(TOKEN_PREFIX) + 8],
        digest=ApiToken.digest_of(secret),
        scopes=wanted,
        expires_at=expires_at,
    )
    return token, secret


def api_token_revoke(*, token: ApiToken) -> ApiToken:
    # Conditional: revoking twice keeps the first time.
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    token.refresh_from_db(fields=["revoked_at"])
    return token


def api_token_used(*, token: ApiToken) -> None:
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= TOKEN_USE_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
