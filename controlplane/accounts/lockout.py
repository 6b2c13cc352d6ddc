"""Logins refused after repeated failures (django-axes): the backend that counts them and the 429 answer.

Axes counts failed logins per username and address in the database (so it works
the same on SQLite and PostgreSQL) and, past ``AXES_FAILURE_LIMIT``, refuses that
pair until ``AXES_COOLOFF_TIME`` has passed since its last try. Its middleware
then replaces the view's answer with ``lockout_response``.
"""

from __future__ import annotations

import math
from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.conf import settings as axes_settings
from axes.helpers import get_client_ip_address, get_cool_off
from axes.utils import reset
from django.contrib import messages
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render


class LoginLockoutBackend(AxesStandaloneBackend):
    """Axes' lockout check, for logins that come with a request.

    Every login over HTTP (the login page, the admin's, ``POST /api/v1/auth/token``)
    passes its request. One without (``Client.login`` in tests, a shell) has no
    address to count failures by, and Axes would refuse it outright.
    """

    def authenticate(self, request: HttpRequest | None, *args: Any, **kwargs: Any) -> None:
        if request is None:
            return None
        return super().authenticate(request, *args, **kwargs)


def _wait(seconds: int) -> str:
    if seconds < 120:
        return "1 second" if seconds == 1 else f"{seconds} seconds"
    return f"{math.ceil(seconds / 60)} minutes"


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict[str, Any] | None
) -> HttpResponse:
    """429 with Retry-After: JSON under /api/, the login page with the sentence elsewhere."""
    cool_off = get_cool_off(request)
    # Each try while locked out starts the cool-off again (AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT),
    # so the whole cool-off is what is left.
    seconds = math.ceil(cool_off.total_seconds()) if cool_off else None
    sentence = "Too many failed logins for this account from your address"
    sentence += f": try again in {_wait(seconds)}." if seconds else "; ask an admin to unlock it."
    response: HttpResponse
    if request.path.startswith("/api/"):
        response = JsonResponse({"error": "locked_out", "message": sentence}, status=429)
    else:
        messages.error(request, sentence)
        context = {"form": AuthenticationForm(request), "next": request.POST.get("next", "")}
        response = render(request, "login.html", context, status=429)
    if seconds:
        response["Retry-After"] = str(seconds)
    return response


def login_attempts_reset(request: HttpRequest, *, username: str) -> None:
    """After a right password, forget this username's failures from this address, as a page login does
    (Axes hears of that one through Django's ``user_logged_in``, which a token request does not send)."""
    address = get_client_ip_address(request)
    if axes_settings.AXES_ENABLED and axes_settings.AXES_RESET_ON_SUCCESS and address:
        reset(ip=address, username=username)


def client_address(request: HttpRequest) -> str | None:
    """The address failures are counted by: the connection's, or behind ``TRUSTED_PROXY_COUNT``
    proxies, the one the outermost of them appended to X-Forwarded-For.

    Only entries our own proxies wrote are read, from the right: whatever a client puts
    at the left of the header itself is never believed.
    """
    from django.conf import settings

    proxies = settings.TRUSTED_PROXY_COUNT
    forwarded = [
        part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()
    ]
    if proxies and len(forwarded) >= proxies:
        return forwarded[-proxies]
    return request.META.get("REMOTE_ADDR")
