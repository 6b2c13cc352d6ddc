"""API tokens: kept as a hash, named, scoped, expiring and revocable; the caller's own only."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from controlplane.accounts.models import ApiToken, TokenScope
from controlplane.accounts.services import api_token_create
from controlplane.registry.models import Promotion, PromotionStatus
from controlplane.training.models import Job
from tests.conftest import PASSWORD
from tests.factories import job_make, model_version_make, promotion_make

pytestmark = pytest.mark.django_db
READ, WRITE, APPROVE = TokenScope.READ, TokenScope.WRITE, TokenScope.APPROVE


def _api(secret: str, **defaults: str) -> Client:
    return Client(headers={"Authorization": f"Token {secret}"}, **defaults)


def _secret(user, *scopes: TokenScope, days: int | None = None) -> str:
    return api_token_create(user=user, name="test", scopes=scopes, expires_in_days=days)[1]


def test_a_token_is_kept_as_a_hash_and_its_secret_is_shown_once(people):
    answer = Client().post("/api/v1/auth/token", {"username": "alice", "password": PASSWORD})

    assert answer.status_code == 200
    secret = answer.json()["token"]
    token = ApiToken.objects.get(user=people["alice"])
    row = ApiToken.objects.filter(pk=token.pk).values().get()
    assert secret.startswith("tyk_") and len(secret) > 40
    assert not any(secret in str(value) for value in row.values())
    assert token.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert secret.startswith(token.prefix) and len(token.prefix) == 12
    # What the CLI gets by default: every scope, the default lifetime.
    assert token.scopes == ["read", "write", "approve"] and token.name == "auth/token"
    assert abs(token.expires_at - (timezone.now() + timedelta(days=90))) < timedelta(minutes=1)
    listed = _api(secret).get("/api/v1/tokens").json()["results"]
    assert [t["prefix"] for t in listed] == [token.prefix] and listed[0]["state"] == "active"
    assert secret not in str(listed)
    assert _api(secret).get("/api/v1/projects").status_code == 200


def test_auth_token_takes_a_name_scopes_and_a_lifetime(people):
    body = {"username": "alice", "password": PASSWORD, "name": "ci", "scopes": "read", "expires_in_days": "7"}

    answer = Client().post("/api/v1/auth/token", body)

    assert answer.status_code == 200, answer.content
    token = ApiToken.objects.get(user=people["alice"])
    assert (token.name, token.scopes) == ("ci", ["read"])
    assert answer.json()["expires_at"].startswith(str((timezone.now() + timedelta(days=7)).date()))


def test_an_expired_a_revoked_or_an_unknown_token_is_a_401(people):
    expired, revoked = _secret(people["alice"], READ, WRITE), _secret(people["alice"], READ, WRITE)
    assert _api(expired).get("/api/v1/projects").status_code == 200
    ApiToken.objects.filter(digest=ApiToken.digest_of(expired)).update(expires_at=timezone.now())
    revoked_id = ApiToken.objects.get(digest=ApiToken.digest_of(revoked)).pk
    assert _api(revoked).post(f"/api/v1/tokens/{revoked_id}/revoke").status_code == 200

    answers = {
        "expired": _api(expired).get("/api/v1/projects"),
        "revoked": _api(revoked).get("/api/v1/projects"),
        "unknown": _api("tyk_" + "x" * 43).get("/api/v1/projects"),
        "empty": _api("").get("/api/v1/projects"),
    }

    for answer in answers.values():
        assert answer.status_code == 401 and answer["WWW-Authenticate"] == "Token"
        assert answer.json()["error"] == "authentication_failed"
    assert "expired on" in answers["expired"].json()["message"]
    assert "was revoked on" in answers["revoked"].json()["message"]
    assert answers["unknown"].json()["message"] == "Unknown API token."


def test_a_read_token_cannot_write(people):
    api = _api(_secret(people["alice"], READ))
    body = {"project": "demo", "base_model": 1, "dataset_version": 1, "config": {}}

    refused = api.post("/api/v1/jobs", body, content_type="application/json")

    assert refused.status_code == 403
    assert refused.json() == {
        "error": "forbidden",
        "message": "POST /api/v1/jobs needs an API token with the write scope; this one has read.",
    }
    assert not Job.objects.exists()
    assert api.get("/api/v1/jobs?project=demo").status_code == 200
    assert (
        api.post("/api/v1/tokens", {"name": "x", "scopes": ["read"]}, "application/json").status_code == 403
    )


def test_deciding_a_promotion_needs_the_approve_scope_and_the_approver_role(people):
    version = model_version_make(job_make(people["demo"], people["alice"]), people["alice"])
    promotion = promotion_make(version, people["alice"])
    carol_writes = _api(_secret(people["carol"], READ, WRITE))
    carol_approves = _api(_secret(people["carol"], APPROVE))
    alice_approves = _api(_secret(people["alice"], APPROVE))

    for action in ("approve", "reject"):
        refused = carol_writes.post(f"/api/v1/promotions/{promotion.pk}/{action}")
        assert refused.status_code == 403 and "with the approve scope" in refused.json()["message"]
    not_approver = alice_approves.post(f"/api/v1/promotions/{promotion.pk}/reject")
    assert Promotion.objects.get().status == PromotionStatus.REQUESTED
    rejected = carol_approves.post(f"/api/v1/promotions/{promotion.pk}/reject", {"comment": "no"})

    assert not_approver.status_code == 403 and "approver" in not_approver.json()["message"]
    assert rejected.status_code == 200, rejected.content
    assert Promotion.objects.get().status == PromotionStatus.REJECTED


def test_a_token_cannot_make_a_token_with_more_scopes_or_a_longer_life(people):
    parent_secret = _secret(people["alice"], READ, WRITE, days=10)
    parent = ApiToken.objects.get(digest=ApiToken.digest_of(parent_secret))
    api = _api(parent_secret)

    wider = api.post("/api/v1/tokens", {"name": "w", "scopes": ["read", "approve"]}, "application/json")
    longer = api.post(
        "/api/v1/tokens", {"name": "l", "scopes": ["read"], "expires_in_days": 11}, "application/json"
    )
    narrower = api.post("/api/v1/tokens", {"name": "n", "scopes": ["read"]}, "application/json")

    assert wider.status_code == 403 and "approve was asked for" in wider.json()["message"]
    assert longer.status_code == 400 and "cannot outlive it" in longer.json()["message"]
    assert narrower.status_code == 201, narrower.content
    made = ApiToken.objects.get(name="n")
    # The default lifetime (90 days) is cut to the parent's 10.
    assert made.scopes == ["read"] and made.expires_at == parent.expires_at
    assert narrower.json()["token"].startswith("tyk_") and narrower.json()["state"] == "active"
    # A browser session holds every scope.
    session = Client()
    session.force_login(people["alice"])
    body = {"name": "s", "scopes": ["approve"], "expires_in_days": 365}
    assert session.post("/api/v1/tokens", body, "application/json").status_code == 201


def test_one_sees_and_revokes_only_ones_own_tokens(people):
    alice = _api(_secret(people["alice"], READ, WRITE))
    bob = _api(_secret(people["bob"], READ, WRITE))
    charlie = _api(_secret(people["charlie"], READ, WRITE))
    alices = ApiToken.objects.get(user=people["alice"]).pk

    seen_by_bob = bob.get("/api/v1/tokens").json()["results"]
    answers = [
        bob.post(f"/api/v1/tokens/{alices}/revoke"),
        charlie.post(f"/api/v1/tokens/{alices}/revoke"),
        bob.post("/api/v1/tokens/999999999/revoke"),
        bob.post(f"/api/v1/tokens/{2**64}/revoke"),
    ]

    assert [t["id"] for t in seen_by_bob] == [ApiToken.objects.get(user=people["bob"]).pk]
    assert {(a.status_code, a.content) for a in answers} == {
        (404, b'{"error":"not_found","message":"No such token of yours."}')
    }
    assert ApiToken.objects.get(pk=alices).revoked_at is None
    assert alice.get("/api/v1/projects").status_code == 200
    revoked = alice.post(f"/api/v1/tokens/{alices}/revoke")
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"


@pytest.mark.parametrize(
    "body",
    [
        {"scopes": ["read"]},
        {"name": "", "scopes": ["read"]},
        {"name": "   ", "scopes": ["read"]},
        {"name": "n" * 101, "scopes": ["read"]},
        {"name": "n"},
        {"name": "n", "scopes": []},
        {"name": "n", "scopes": ["root"]},
        {"name": "n", "scopes": [1]},
        {"name": "n", "scopes": ["read", "read", "read", "read"]},
        {"name": "n", "scopes": {"read": True}},
        {"name": "n", "scopes": ["read"], "expires_in_days": 0},
        {"name": "n", "scopes": ["read"], "expires_in_days": -1},
        {"name": "n", "scopes": ["read"], "expires_in_days": 366},
        {"name": "n", "scopes": ["read"], "expires_in_days": 10**30},
        {"name": "n", "scopes": ["read"], "expires_in_days": 30.5},
        {"name": "n", "scopes": ["read"], "expires_in_days": True},
        {"name": "n", "scopes": ["read"], "expires_in_days": "30 days"},
        {"name": "n", "scopes": ["read"], "owner": "bob"},
        ["name", "n"],
    ],
)
def test_a_bad_token_request_is_a_400_that_makes_nothing(people, body):
    api = _api(_secret(people["alice"], READ, WRITE, APPROVE))

    answer = api.post("/api/v1/tokens", body, "application/json")

    assert answer.status_code == 400, answer.content
    assert answer.json()["error"] == "validation_failed" and answer.json()["message"]
    assert ApiToken.objects.count() == 1
