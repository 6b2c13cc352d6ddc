"""The REST API of suites, suite runs, gate policies and gate reports: answers, refusals, outsiders."""

from __future__ import annotations

import pytest

from controlplane.evidence.models import GatePolicy, Suite, SuiteRun
from controlplane.training.models import Job, JobKind
from tests.controlplane.evidence.test_suites import quiz_task, run_succeed, suite_make, version_make
from tests.factories import promotion_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(people):
    return version_make(people["demo"], people["alice"])


def test_a_suite_is_written_read_listed_and_versioned(api_for, people, model):
    alice = api_for("alice")
    body = {
        "project": "demo",
        "model_name": model.name,
        "name": "core",
        "tasks": [quiz_task(people["demo"], people["alice"])],
    }
    created = alice.post("/api/v1/suites", body, format="json")
    assert created.status_code == 201, created.json()
    suite = created.json()
    assert (suite["version"], suite["seed"], suite["model_name"]) == (1, 1234, model.name)
    assert alice.get(f"/api/v1/suites/{suite['id']}").json() == suite
    listed = alice.get("/api/v1/suites", {"project": "demo", "model": model.name}).json()
    assert [s["id"] for s in listed["results"]] == [suite["id"]] and listed["next"] is None

    tasks = [*suite["tasks"], quiz_task(people["demo"], people["alice"], "more")]
    second = api_for("bob").post(
        f"/api/v1/suites/{suite['id']}/versions", {"tasks": tasks, "seed": 9}, format="json"
    )
    assert second.status_code == 201, second.json()
    assert (second.json()["version"], second.json()["seed"], len(second.json()["tasks"])) == (2, 9, 2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tasks": []}, "tasks: List should have at least 1 item"),
        ({"tasks": [{"name": "a"}]}, "tasks.0"),
        ({"name": "Bad Name"}, "suite name"),
        ({"extra": 1}, "extra"),
        ({"seed": -1}, "seed"),
    ],
)
def test_a_bad_suite_body_is_a_400_with_a_message(api_for, people, model, change, message):
    body = {
        "project": "demo",
        "model_name": model.name,
        "name": "core",
        "tasks": [quiz_task(people["demo"], people["alice"])],
    }
    answer = api_for("alice").post("/api/v1/suites", {**body, **change}, format="json")
    assert answer.status_code == 400, answer.json()
    assert answer.json()["error"] == "validation_failed" and message in answer.json()["message"]
    assert not Suite.objects.exists()


def test_a_suite_run_is_201_when_new_and_200_when_cached(api_for, people, model):
    suite = suite_make(people, model)
    bob = api_for("bob")
    first = bob.post("/api/v1/suite-runs", {"suite": suite.pk, "model_version": model.pk}, format="json")
    assert first.status_code == 201, first.json()
    run = first.json()
    assert run["status"] == "running" and [t["task"] for t in run["tasks"]] == ["quiz-0", "quiz-1"]
    assert all(t["job_status"] == "queued" for t in run["tasks"])
    again = bob.post("/api/v1/suite-runs", {"suite": suite.pk, "model_version": model.pk}, format="json")
    assert again.status_code == 200 and again.json()["id"] == run["id"]
    assert Job.objects.filter(kind=JobKind.EVALUATE).count() == 2

    run_succeed(SuiteRun.objects.get(pk=run["id"]), {"quiz-0": {"mc_acc": 0.5}, "quiz-1": {"mc_acc": 0.25}})
    detail = bob.get(f"/api/v1/suite-runs/{run['id']}").json()
    assert detail["status"] == "succeeded" and detail["results"]["quiz-1"] == {"mc_acc": 0.25}
    listed = bob.get("/api/v1/suite-runs", {"model_version": model.pk}).json()
    assert [r["id"] for r in listed["results"]] == [run["id"]]


def test_a_viewer_cannot_start_a_run_and_a_missing_suite_is_404(api_for, people, model):
    suite = suite_make(people, model)
    viewer = api_for("viv").post(
        "/api/v1/suite-runs", {"suite": suite.pk, "model_version": model.pk}, format="json"
    )
    assert viewer.status_code == 403 and "member" in viewer.json()["message"]
    missing = api_for("alice").post(
        "/api/v1/suite-runs", {"suite": 999999, "model_version": model.pk}, format="json"
    )
    assert missing.status_code == 404
    bad = api_for("alice").post(
        "/api/v1/suite-runs", {"suite": "x", "model_version": model.pk}, format="json"
    )
    assert bad.status_code == 400 and "suite" in bad.json()["message"]
    assert not SuiteRun.objects.exists()


def test_predictions_of_a_task_that_has_not_finished_are_a_409(api_for, people, model):
    suite = suite_make(people, model)
    alice = api_for("alice")
    run = alice.post(
        "/api/v1/suite-runs", {"suite": suite.pk, "model_version": model.pk}, format="json"
    ).json()
    answer = alice.get(f"/api/v1/suite-runs/{run['id']}/tasks/quiz-0/predictions")
    assert answer.status_code == 409 and "queued" in answer.json()["message"]
    assert alice.get(f"/api/v1/suite-runs/{run['id']}/tasks/nope/predictions").status_code == 404
    bad = alice.get(f"/api/v1/suite-runs/{run['id']}/tasks/quiz-0/predictions", {"filter": "maybe"})
    assert bad.status_code == 400


def test_charlie_gets_404_for_every_suite_endpoint_of_demo(api_for, people, model):
    suite = suite_make(people, model)
    run = SuiteRun.objects.create(suite=suite, model_version=model, created_by=people["alice"])
    promotion = promotion_make(model, people["alice"])
    charlie = api_for("charlie")
    answers = [
        charlie.get("/api/v1/suites", {"project": "demo"}),
        charlie.post(
            "/api/v1/suites",
            {"project": "demo", "model_name": model.name, "name": "x", "tasks": suite.tasks},
            format="json",
        ),
        charlie.get(f"/api/v1/suites/{suite.pk}"),
        charlie.post(f"/api/v1/suites/{suite.pk}/versions", {"tasks": suite.tasks}, format="json"),
        charlie.post("/api/v1/suite-runs", {"suite": suite.pk, "model_version": model.pk}, format="json"),
        charlie.get("/api/v1/suite-runs", {"model_version": model.pk}),
        charlie.get(f"/api/v1/suite-runs/{run.pk}"),
        charlie.get(f"/api/v1/suite-runs/{run.pk}/tasks/quiz-0/predictions"),
        charlie.get("/api/v1/gate-policy", {"project": "demo", "model": model.name, "target": "production"}),
        charlie.put(
            "/api/v1/gate-policy",
            {"project": "demo", "model": model.name, "target": "production", "rules": []},
            format="json",
        ),
        charlie.get(f"/api/v1/promotions/{promotion.pk}/gates"),
        charlie.post(
            f"/api/v1/promotions/{promotion.pk}/pii-acknowledgement", {"reason": "x"}, format="json"
        ),
    ]
    assert [a.status_code for a in answers] == [404] * len(answers)
    assert SuiteRun.objects.count() == 1 and Suite.objects.count() == 1 and not GatePolicy.objects.exists()


def test_a_gate_policy_is_put_by_an_approver_and_the_report_follows(api_for, people, model):
    suite_make(people, model)
    promotion = promotion_make(model, people["alice"])
    rule = {
        "kind": "absolute",
        "suite": "core",
        "task": "quiz-0",
        "metric": "mc_acc",
        "op": ">=",
        "value": 0.5,
    }
    body = {"project": "demo", "model": model.name, "target": "production", "rules": [rule]}
    assert api_for("alice").put("/api/v1/gate-policy", body, format="json").status_code == 403
    assert api_for("alice").get(f"/api/v1/promotions/{promotion.pk}/gates").status_code == 404
    put = api_for("carol").put("/api/v1/gate-policy", body, format="json")
    assert put.status_code == 200, put.json()
    assert put.json()["rules"][0]["op"] == ">=" and put.json()["updated_by"] == "carol"
    got = api_for("viv").get(
        "/api/v1/gate-policy", {"project": "demo", "model": model.name, "target": "production"}
    )
    assert got.json() == put.json()
    report = api_for("viv").get(f"/api/v1/promotions/{promotion.pk}/gates").json()
    assert report["passed"] is False and report["pending"] is True and report["kept"] is False
    assert [r["status"] for r in report["rules"]] == ["pending"]


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"kind": "absolute"}], "rules.0"),
        ([{"kind": "relative", "suite": "core", "task": "quiz-0", "metric": "m"}], "exactly one"),
        ([{"kind": "pii_clean", "x": 1}], "rules.0"),
        ({"kind": "pii_clean"}, "rules"),
    ],
)
def test_a_bad_gate_policy_is_a_400(api_for, people, model, rules, message):
    suite_make(people, model)
    body = {"project": "demo", "model": model.name, "target": "production", "rules": rules}
    answer = api_for("carol").put("/api/v1/gate-policy", body, format="json")
    assert answer.status_code == 400 and message in answer.json()["message"], answer.json()
    target = api_for("carol").put(
        "/api/v1/gate-policy", {**body, "rules": [], "target": "moon"}, format="json"
    )
    assert target.status_code == 400 and "target" in target.json()["message"]
    assert not GatePolicy.objects.exists()
