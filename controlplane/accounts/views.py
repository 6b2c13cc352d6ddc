"""The API tokens page: a person's own tokens, listed, created (the secret shown once) and revoked."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from controlplane.accounts import selectors, services
from controlplane.accounts.models import TOKEN_NAME_MAX, TokenScope
from controlplane.accounts.requests import AuthenticatedHttpRequest
from controlplane.errors import NotFound, ValidationFailed, page_errors

SCOPE_HELP = {
    TokenScope.READ: "read anything you can see (GET)",
    TokenScope.WRITE: "launch, cancel, upload, request promotions (every other method)",
    TokenScope.APPROVE: "approve or reject promotions (where you are an approver)",
}


class TokenCreateForm(forms.Form):
    """A new token; the service checks every bound again."""

    name = forms.CharField(max_length=TOKEN_NAME_MAX, help_text="what or who uses it, e.g. the CI pipeline")
    scopes = forms.TypedMultipleChoiceField(
        choices=[(scope.value, f"{scope.value}: {SCOPE_HELP[scope]}") for scope in TokenScope],
        coerce=TokenScope,
        widget=forms.CheckboxSelectMultiple,
        initial=[TokenScope.READ.value],
    )
    expires_in_days = forms.IntegerField(min_value=1, label="Expires in (days)")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        days = self.fields["expires_in_days"]
        days.initial = settings.API_TOKEN_DEFAULT_DAYS
        days.help_text = f"at most {settings.API_TOKEN_MAX_DAYS}"


@never_cache  # the answer that shows a new secret must not be kept by any cache
@login_required
@require_http_methods(["GET", "POST"])
@page_errors
def token_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    if "revoke" in request.POST:
        raw = request.POST["revoke"]
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
            raise NotFound("No such token of yours.")
        token = services.api_token_revoke(token=selectors.api_token_get(user=request.user, token_id=int(raw)))
        messages.info(request, f"Revoked {token}: it no longer works.")
        return redirect("account-tokens")
    form = TokenCreateForm(request.POST or None)
    created = secret = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            created, secret = services.api_token_create(
                user=request.user,
                name=data["name"],
                scopes=data["scopes"],
                expires_in_days=data["expires_in_days"],
            )
        except ValidationFailed as exc:
            form.add_error(None, exc.message)  # shown on the form, with what was typed kept
        else:
            form = TokenCreateForm()
    context = {
        "form": form,
        "tokens": selectors.api_token_list(user=request.user)[:200],
        "created": created,
        "secret": secret,
    }
    return render(request, "account_tokens.html", context)
