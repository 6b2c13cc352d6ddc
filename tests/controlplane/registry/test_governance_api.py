"""The registry's governance over REST: withdraw, comments, rollbacks, an approval's override and the
deployment history; each refuses bad input with a 4xx and a message, and an outsider gets 404."""

from __future__ import annotations

import pytest

from controlplane.accounts.models import Role, TokenScope
from controlplane.accounts.services import api_token_create, member_add
from controlplane.registry import hooks
from controlplane.registry.models import Promotion, PromotionComment, PromotionKind, PromotionStatus
from controlplane.registry.services import model_version_create
from tests.controlplane.registry.trained import trained_job_make
from tests.factories import job_make, model_version_make, promotion_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def promotion(people):
    """alice's open request, with no MLflow behind it: enough for what decides nothing."""
    version = model_version_make(job_make(people["demo"], people["alice"]), people["alice"])
    return promotion_make(version, people["alice"])


@pytest.fixture
def deployed_twice(people, api_for, mlflow_server, tmp_path):
    """Two versions of model "api-gov", both deployed to production in turn (by carol's approvals)."""
    made = []
    for _ in range(2):
        job = trained_job_make(people["demo"], people["alice"], tmp_path)
        version = model_version_create(job=job, user=people["alice"], name="api-gov")
        asked = api_for("alice").post(
            "/api/v1/promotions", {"model_version": version.pk, "target": "production"}, format="json"
        )
        approved = api_for("carol").post(
            f"/api/v1/promotions/{asked.json()['id']}/approve", {}, format="json"
        )
        assert approved.status_code == 200, approved.content
        made.append(version)
    return made


def test_the_requester_withdraws_over_the_api_and_no_one_else_can(people, api_for, promotion):
    url = f"/api/v1/promotions/{promotion.pk}/withdraw"
    assert api_for("charlie").post(url, {}, format="json").status_code == 404
    refused = api_for("bob").post(url, {}, format="json")
    assert refused.status_code == 403 and "person who asked" in refused.json()["message"]
    assert api_for("alice").post(url, {"comment": 7}, format="json").status_code == 400

    withdrawn = api_for("alice").post(url, {"comment": "not ready"}, format="json")

    assert withdrawn.status_code == 200, withdrawn.content
    body = withdrawn.json()
    assert (body["status"], body["decision_comment"], body["kind"]) == ("withdrawn", "not ready", "promote")
    again = api_for("alice").post(url, {}, format="json")
    assert again.status_code == 409 and again.json()["error"] == "conflict"


def test_comments_are_added_and_listed_oldest_first_in_pages(people, api_for, promotion):
    url = f"/api/v1/promotions/{promotion.pk}/comments"
    for n, who in enumerate(("viv", "carol", "alice")):
        made = api_for(who).post(url, {"body": f"remark {n}"}, format="json")
        assert made.status_code == 201, made.content
    first = api_for("bob").get(url, {"limit": 2})
    assert [c["body"] for c in first.json()["results"]] == ["remark 0", "remark 1"]
    rest = api_for("bob").get(first.json()["next"])
    assert [(c["author"], c["body"]) for c in rest.json()["results"]] == [("alice", "remark 2")]
    assert rest.json()["next"] is None

    for bad in ({}, {"body": ""}, {"body": "x" * 5001}, {"body": "ok", "extra": 1}):
        answer = api_for("alice").post(url, bad, format="json")
        assert answer.status_code == 400 and answer.json()["message"], bad
    assert api_for("charlie").get(url).status_code == 404
    assert api_for("charlie").post(url, {"body": "hi"}, format="json").status_code == 404
    assert PromotionComment.objects.count() == 3


def test_a_rollback_request_over_the_api_is_approved_by_another_and_shows_in_the_history(
    people, api_for, deployed_twice
):
    first, second = deployed_twice
    asked = api_for("bob").post(
        "/api/v1/rollbacks",
        {"model_version": first.pk, "target": "production", "comment": "v2 regressed"},
        format="json",
    )
    assert asked.status_code == 201, asked.content
    assert (asked.json()["kind"], asked.json()["status"], asked.json()["deployment"]) == (
        "rollback",
        "requested",
        None,
    )
    approved = api_for("carol").post(f"/api/v1/promotions/{asked.json()['id']}/approve", {}, format="json")
    assert approved.status_code == 200 and approved.json()["deployment"]["mlflow_version"] == first.version

    history = api_for("viv").get(
        "/api/v1/deployments/production/history", {"project": "demo", "model": "api-gov"}
    )

    assert history.status_code == 200, history.content
    rows = history.json()["results"]
    assert [(r["mlflow_version"], r["kind"], r["current"]) for r in rows] == [
        (first.version, "promote", False),
        (second.version, "promote", False),
        (first.version, "rollback", True),
    ]
    assert rows[-1]["approved_by"] == "carol" and rows[-1]["requested_by"] == "bob"


def test_rollbacks_refuse_what_they_cannot_do(people, api_for, deployed_twice):
    first, second = deployed_twice
    alice = api_for("alice")
    cases = [
        ({"model_version": second.pk, "target": "production"}, 409, "runs now"),
        ({"model_version": first.pk, "target": "staging"}, 409, "never deployed"),
        ({"model_version": first.pk, "target": "moon"}, 400, "target"),
        ({"model_version": first.pk}, 400, "target"),
        ({"model_version": first.pk, "target": "production", "reason": "x"}, 400, "emergency"),
        ({"model_version": first.pk, "target": "production", "emergency": "yes"}, 400, "emergency"),
        ({"model_version": first.pk, "target": "production", "emergency": True, "reason": "x"}, 403, "admin"),
    ]
    for body, code, words in cases:
        answer = alice.post("/api/v1/rollbacks", body, format="json")
        assert answer.status_code == code and words in answer.json()["message"], (body, answer.json())
    outsider = api_for("charlie").post(
        "/api/v1/rollbacks", {"model_version": first.pk, "target": "production"}, format="json"
    )
    assert outsider.status_code == 404
    assert not Promotion.objects.filter(kind=PromotionKind.ROLLBACK).exists()


def test_an_admins_emergency_rollback_deploys_at_once_but_not_with_a_token_that_cannot_approve(
    people, deployed_twice
):
    from rest_framework.test import APIClient

    first, _ = deployed_twice
    ada = member_add(project=people["demo"], username="ada", role=Role.ADMIN)
    body = {
        "model_version": first.pk,
        "target": "production",
        "emergency": True,
        "reason": "v2 leaks prompts",
    }
    _, write_secret = api_token_create(user=ada, name="ci", scopes=[TokenScope.READ, TokenScope.WRITE])
    _, approve_secret = api_token_create(user=ada, name="ops", scopes=list(TokenScope))
    weak = APIClient()
    weak.credentials(HTTP_AUTHORIZATION=f"Token {write_secret}")
    refused = weak.post("/api/v1/rollbacks", body, format="json")
    assert refused.status_code == 403 and "approve scope" in refused.json()["message"]

    strong = APIClient()
    strong.credentials(HTTP_AUTHORIZATION=f"Token {approve_secret}")
    done = strong.post("/api/v1/rollbacks", body, format="json")

    assert done.status_code == 201, done.content
    answer = done.json()
    assert (answer["status"], answer["override_reason"], answer["decided_by"]) == (
        "approved",
        "v2 leaks prompts",
        "ada",
    )
    assert answer["deployment"]["mlflow_version"] == first.version


def test_an_approval_past_a_failing_gate_needs_an_admin_and_a_reason(
    people, api_for, monkeypatch, tmp_path, mlflow_server
):
    from rest_framework.test import APIClient

    monkeypatch.setattr(hooks, "_approval_checks", [lambda promotion: ["Win rate 30% is below 50%."]])
    ada = APIClient()
    ada.force_authenticate(user=member_add(project=people["demo"], username="ada", role=Role.ADMIN))
    version = model_version_create(
        job=trained_job_make(people["demo"], people["alice"], tmp_path), user=people["alice"], name="gated"
    )
    asked = api_for("alice").post(
        "/api/v1/promotions", {"model_version": version.pk, "target": "production"}, format="json"
    )
    url = f"/api/v1/promotions/{asked.json()['id']}/approve"

    blocked = api_for("carol").post(url, {}, format="json")
    assert blocked.status_code == 409 and "Win rate 30%" in blocked.json()["message"]
    assert blocked.json()["details"] == {"blockers": ["Win rate 30% is below 50%."]}
    assert api_for("carol").post(url, {"override_reason": "trust me"}, format="json").status_code == 403
    assert ada.post(url, {"override_reason": 3}, format="json").status_code == 400

    done = ada.post(url, {"override_reason": "judged by hand"}, format="json")

    assert done.status_code == 200, done.content
    assert done.json()["override_reason"] == "judged by hand"
    assert Promotion.objects.get(pk=asked.json()["id"]).status == PromotionStatus.APPROVED


def test_the_history_needs_a_project_a_model_and_a_known_target(people, api_for):
    viv = api_for("viv")
    assert viv.get("/api/v1/deployments/production/history", {"model": "x"}).status_code == 400
    missing_model = viv.get("/api/v1/deployments/production/history", {"project": "demo"})
    assert missing_model.status_code == 400 and "model" in missing_model.json()["message"]
    moon = viv.get("/api/v1/deployments/moon/history", {"project": "demo", "model": "x"})
    assert moon.status_code == 400 and "Unknown target" in moon.json()["message"]
    empty = viv.get("/api/v1/deployments/staging/history", {"project": "demo", "model": "nothing"})
    assert empty.status_code == 200 and empty.json()["results"] == []
    outsider = api_for("charlie").get(
        "/api/v1/deployments/staging/history", {"project": "demo", "model": "x"}
    )
    assert outsider.status_code == 404
