"""The API tokens page: lists one's own tokens, creates one (its secret shown once) and revokes."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from controlplane.accounts.models import ApiToken
from controlplane.accounts.services import api_token_create

pytestmark = pytest.mark.django_db


def _browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_page_creates_a_token_shows_its_secret_once_and_revokes_it(people):
    browser = _browser(people["alice"])
    assert 'href="/account/tokens"' in browser.get("/workers/").content.decode()  # in the header

    created = browser.post(
        "/account/tokens", {"name": "ci", "scopes": ["read", "write"], "expires_in_days": "30"}
    )

    assert created.status_code == 200 and "no-store" in created["Cache-Control"]
    secret = re.search(r'id="token-secret">(tyk_[^<]+)<', created.content.decode())[1]
    token = ApiToken.objects.get(user=people["alice"])
    assert (token.name, token.scopes, token.digest) == ("ci", ["read", "write"], ApiToken.digest_of(secret))
    assert abs(token.expires_at - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)
    api = Client(headers={"Authorization": f"Token {secret}"})
    assert api.get("/api/v1/projects").status_code == 200
    listed = browser.get("/account/tokens").content.decode()
    assert secret not in listed and f"{token.prefix}…" in listed and "active" in listed

    revoked = browser.post("/account/tokens", {"revoke": str(token.pk)}, follow=True)

    assert revoked.redirect_chain == [("/account/tokens", 302)]
    assert "Revoked ci" in revoked.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is not None and "revoked" in revoked.content.decode()
    assert api.get("/api/v1/projects").status_code == 401


def test_the_page_refuses_a_bad_token_with_the_sentence_and_keeps_what_was_typed(people, settings):
    browser = _browser(people["alice"])

    no_scope = browser.post("/account/tokens", {"name": "ci", "expires_in_days": "30"})
    too_long = browser.post(
        "/account/tokens", {"name": "kept-name", "scopes": ["read"], "expires_in_days": "400"}
    )
    not_a_number = browser.post(
        "/account/tokens", {"name": "ci", "scopes": ["read"], "expires_in_days": "1e3"}
    )
    bad_scope = browser.post("/account/tokens", {"name": "ci", "scopes": ["root"], "expires_in_days": "3"})

    assert all(page.status_code == 200 for page in (no_scope, too_long, not_a_number, bad_scope))
    assert "This field is required." in no_scope.content.decode()
    assert "expires_in_days: between 1 and 365 days." in too_long.content.decode()
    assert 'value="kept-name"' in too_long.content.decode()
    assert "Enter a whole number." in not_a_number.content.decode()
    assert "Select a valid choice." in bad_scope.content.decode()
    assert not ApiToken.objects.exists()


def test_one_revokes_only_ones_own_tokens_on_the_page(people):
    alices, _ = api_token_create(user=people["alice"], name="hers", scopes=["read"])

    answers = [
        _browser(people["bob"]).post("/account/tokens", {"revoke": str(alices.pk)}),
        _browser(people["charlie"]).post("/account/tokens", {"revoke": str(alices.pk)}),
        _browser(people["bob"]).post("/account/tokens", {"revoke": "9" * 30}),
        _browser(people["bob"]).post("/account/tokens", {"revoke": "-1"}),
    ]

    assert [page.status_code for page in answers] == [404] * 4
    assert "hers" not in _browser(people["bob"]).get("/account/tokens").content.decode()
    alices.refresh_from_db()
    assert alices.revoked_at is None
    assert _browser(people["alice"]).post("/account/tokens", {"revoke": str(alices.pk)}).status_code == 302
    alices.refresh_from_db()
    assert alices.revoked_at is not None


def test_a_stranger_is_sent_to_log_in(people):
    page = Client().get("/account/tokens")
    assert page.status_code == 302 and page["Location"].startswith("/login/")
    assert Client().post("/account/tokens", {"name": "x", "scopes": ["read"]}).status_code == 302
    assert not ApiToken.objects.exists()


def test_an_admin_sees_and_revokes_anyones_token_in_the_admin(people):
    from django.contrib.auth.models import User

    token, secret = api_token_create(user=people["alice"], name="leaked", scopes=["read"])
    admin = Client()
    admin.force_login(User.objects.create_superuser("root", password="unused-here"))

    listed = admin.get("/admin/accounts/apitoken/")
    revoked = admin.post("/admin/accounts/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})

    assert listed.status_code == 200 and token.prefix in listed.content.decode()
    assert secret not in listed.content.decode()
    assert revoked.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert Client(headers={"Authorization": f"Token {secret}"}).get("/api/v1/projects").status_code == 401
