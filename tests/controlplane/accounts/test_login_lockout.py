"""Logins are throttled: repeated wrong passwords lock a username out from that address for a while."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.test import Client

from controlplane.accounts.models import ApiToken
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def _token_ask(client: Client, username: str, password: str) -> object:
    return client.post("/api/v1/auth/token", {"username": username, "password": password})


def test_a_wrong_password_is_a_401_with_a_sentence_and_a_missing_one_a_400(people):
    wrong = _token_ask(Client(), "alice", "not-her-password")
    nobody = _token_ask(Client(), "nobody-by-that-name", PASSWORD)
    missing = [
        Client().post("/api/v1/auth/token", body)
        for body in (
            {},
            {"username": "alice"},
            {"password": PASSWORD},
            {"username": "", "password": PASSWORD},
        )
    ]

    assert wrong.status_code == 401 and wrong["WWW-Authenticate"] == "Token"
    assert wrong.json() == {"error": "authentication_failed", "message": "Wrong username or password."}
    assert nobody.status_code == 401
    assert {(answer.status_code, answer.json()["error"]) for answer in missing} == {
        (400, "validation_failed")
    }


def test_repeated_wrong_passwords_lock_that_username_from_that_address(people, settings):
    settings.AXES_FAILURE_LIMIT = 5
    client = Client()

    codes = [_token_ask(client, "alice", f"guess-{n}").status_code for n in range(7)]
    right = _token_ask(client, "alice", PASSWORD)

    assert codes == [401] * 4 + [429] * 3
    assert right.status_code == 429 and right["Retry-After"] == "900"
    assert right.json() == {
        "error": "locked_out",
        "message": "Too many failed logins for this account from your address: try again in 15 minutes.",
    }
    assert not ApiToken.objects.filter(user=people["alice"]).exists()
    # Neither another person from the same address nor alice from another address is locked out.
    assert _token_ask(client, "bob", PASSWORD).status_code == 200
    assert _token_ask(Client(REMOTE_ADDR="10.20.30.40"), "alice", PASSWORD).status_code == 200


def test_the_lockout_ends_after_the_cool_off(people, settings):
    settings.AXES_COOLOFF_TIME = timedelta(seconds=1)
    client = Client()
    for n in range(5):
        _token_ask(client, "alice", f"guess-{n}")

    refused = _token_ask(client, "alice", PASSWORD)
    time.sleep(1.2)
    after = _token_ask(client, "alice", PASSWORD)

    assert refused.status_code == 429 and refused["Retry-After"] == "1"
    assert refused.json()["message"].endswith("try again in 1 second.")
    assert after.status_code == 200 and after.json()["token"].startswith("tyk_")


def test_a_right_password_forgets_the_wrong_ones_before_it(people):
    client = Client()
    for n in range(4):
        _token_ask(client, "alice", f"guess-{n}")
    assert _token_ask(client, "alice", PASSWORD).status_code == 200

    codes = [_token_ask(client, "alice", f"again-{n}").status_code for n in range(4)]

    assert codes == [401] * 4


def test_the_login_page_locks_out_with_a_sentence(people):
    client = Client()
    for n in range(5):
        wrong = client.post("/login/", {"username": "alice", "password": f"guess-{n}"})

    page = client.post("/login/", {"username": "alice", "password": PASSWORD})

    assert wrong.status_code == 429
    assert page.status_code == 429 and page["Retry-After"] == "900"
    html = page.content.decode()
    assert "Too many failed logins for this account from your address: try again in 15 minutes." in html
    assert 'name="password"' in html  # still the login page
    assert "_auth_user_id" not in client.session
    # bob, from the same browser, logs in.
    assert client.post("/login/", {"username": "bob", "password": PASSWORD}).status_code == 302


def test_behind_the_tls_proxy_each_person_is_counted_by_their_own_address(people, settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.TRUSTED_PROXY_COUNT = 1
    # Every request arrives from the proxy (10.0.0.1), which appends the person's address;
    # the attacker's own header entries (at the left) change nothing.
    attacker = [
        Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=f"10.1.1.{n}, 203.0.113.7") for n in range(4)
    ]
    alice = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.2")

    codes = [_token_ask(client, "alice", f"guess-{n}").status_code for n, client in enumerate(attacker)]

    assert codes == [401, 401, 429, 429]
    assert _token_ask(alice, "alice", PASSWORD).status_code == 200
