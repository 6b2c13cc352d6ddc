"""Promotion on evidence over real parts: a suite of two tasks runs as parallel evaluate jobs on the
session's worker, on the challenger and on the production champion, cached per pair; a gate that the
challenger fails blocks approval until a project admin overrides it with a written reason."""

from __future__ import annotations

import json
import time

import pytest
from django.test import Client

from controlplane.evidence.models import GateCheck
from tests.conftest import PASSWORD
from tests.e2e.client import FAST_LORA, api, submit, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

QUESTIONS = [
    {"question": "What is the capital of France?", "choices": ["Paris", "London", "Rome"], "answer": "A"},
    {"question": "How many legs has a cat?", "choices": ["two", "four", "many"], "answer": "B"},
    {"question": "Two plus three is", "choices": ["five", "six"], "answer": "A"},
    {"question": "Which is a fruit?", "choices": ["apple", "brick", "cloud"], "answer": "A"},
    {"question": "Which is cold?", "choices": ["fire", "ice"], "answer": "B"},
    {"question": "The sky on a clear day is", "choices": ["green", "blue", "red"], "answer": "B"},
]


def _runs_of(client, version_id: int) -> list[dict]:
    return client.get("suite-runs", params={"model_version": version_id}).json()["results"]


def _settled(client, version_ids: list[int], timeout: float = 420) -> dict[int, dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = {v: _runs_of(client, v) for v in version_ids}
        if all(r and r[0]["status"] != "running" for r in runs.values()):
            return {v: r[0] for v, r in runs.items()}
        time.sleep(1)
    raise AssertionError(f"the suite runs did not end: {runs}")


def test_a_suite_runs_in_parallel_on_challenger_and_champion_and_a_failing_gate_blocks_approval(
    setup, people, live_server, mlflow_server
):
    from controlplane.accounts.models import Role
    from controlplane.accounts.services import member_add

    member_add(project=people["demo"], username="dana", role=Role.ADMIN, password=PASSWORD)
    alice, carol, dana = setup["alice"], api(live_server, "carol"), api(live_server, "dana")
    upload = "".join(json.dumps(row) + "\n" for row in QUESTIONS).encode()
    quiz = alice.post(
        "datasets",
        data={"project": "demo", "name": "quiz"},
        files={"file": ("q.jsonl", upload, "application/jsonl")},
    )
    assert quiz.status_code == 201, quiz.text

    # Two finetunes: the champion (v1, approved to production) and the challenger (v2).
    versions = []
    for _ in range(2):
        job, _ = wait_for(alice, submit(setup, FAST_LORA), {"succeeded", "failed"})
        assert job["status"] == "succeeded", job["error"]
        version = alice.post("model-versions", json={"job": job["id"], "name": "tiny-lora"})
        assert version.status_code == 201, version.text
        versions.append(version.json())
    champion, challenger = versions
    first = alice.post("promotions", json={"model_version": champion["id"], "target": "production"}).json()
    approved = carol.post(f"promotions/{first['id']}/approve", json={"comment": "first"})
    assert approved.status_code == 200, approved.text

    tasks = [
        {
            "name": "quiz",
            "dataset_version": quiz.json()["id"],
            "evaluation": {"metrics": ["multiple_choice"]},
        },
        {
            "name": "arithmetic",
            "dataset_version": setup["dataset"],
            "evaluation": {"metrics": ["exact_match"], "max_new_tokens": 8},
        },
    ]
    suite = alice.post(
        "suites", json={"project": "demo", "model_name": "tiny-lora", "name": "core", "tasks": tasks}
    )
    assert suite.status_code == 201, suite.text
    quiz_floor = {
        "kind": "absolute",
        "suite": "core",
        "task": "quiz",
        "metric": "mc_acc",
        "op": ">=",
        "value": 0.5,
    }
    rules = [
        # No model gets more than every question right: this rule fails whatever the scores.
        {**quiz_floor, "value": 1.5},
        {"kind": "relative", "suite": "core", "task": "quiz", "metric": "mc_acc", "max_drop": 100},
    ]
    gate = carol.put(
        "gate-policy", json={"project": "demo", "model": "tiny-lora", "target": "production", "rules": rules}
    )
    assert gate.status_code == 200, gate.text

    # The request starts the suite on both versions: four evaluate jobs queued at once.
    requested = alice.post("promotions", json={"model_version": challenger["id"], "target": "production"})
    assert requested.status_code == 201, requested.text
    promotion_id = requested.json()["id"]
    deadline = time.monotonic() + 30
    while not (_runs_of(alice, challenger["id"]) and _runs_of(alice, champion["id"])):
        assert time.monotonic() < deadline, "the request started no suite run"
        time.sleep(0.3)
    started = [_runs_of(alice, v["id"])[0] for v in (challenger, champion)]
    job_ids = [t["job"] for run in started for t in run["tasks"]]
    assert len(job_ids) == 4

    # While they run, the gate is pending and approval is refused.
    report = alice.get(f"promotions/{promotion_id}/gates").json()
    assert report["pending"] and {r["status"] for r in report["rules"]} == {"pending"}
    refused = carol.post(f"promotions/{promotion_id}/approve", json={})
    assert refused.status_code == 409 and "pending" in refused.json()["message"]

    runs = _settled(alice, [challenger["id"], champion["id"]])
    jobs = [alice.get(f"jobs/{job_id}").json() for job_id in job_ids]
    assert all(job["status"] == "succeeded" for job in jobs), [job["error"] for job in jobs]
    # Parallel: some job started before another one ended.
    spans = sorted((job["started_at"], job["finished_at"]) for job in jobs)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))
    for run in runs.values():
        assert run["status"] == "succeeded", run["error"]
        assert set(run["results"]) == {"quiz", "arithmetic"}
        assert {"mc_acc", "mc_acc_norm"} <= set(run["results"]["quiz"])
        assert "exact_match" in run["results"]["arithmetic"]
    assert [j["config"]["evaluation"]["seed"] for j in jobs] == [1234] * 4

    # Cached: asking again for the pair starts no job.
    again = alice.post("suite-runs", json={"suite": suite.json()["id"], "model_version": challenger["id"]})
    assert again.status_code == 200 and again.json()["id"] == runs[challenger["id"]]["id"]
    assert len(alice.get("jobs", params={"project": "demo", "kind": "evaluate"}).json()["results"]) == 4

    # Each row the challenger answered, kept with the run.
    rows = alice.get(f"suite-runs/{runs[challenger['id']]['id']}/tasks/quiz/predictions").json()
    assert len(rows["results"]) == len(QUESTIONS)
    right = alice.get(
        f"suite-runs/{runs[challenger['id']]['id']}/tasks/quiz/predictions", params={"filter": "right"}
    ).json()["results"]
    mc_acc = runs[challenger["id"]]["results"]["quiz"]["mc_acc"]
    assert len(right) == round(mc_acc * len(QUESTIONS))

    # The gate: the impossible floor fails with its figure, the relative rule passes.
    report = alice.get(f"promotions/{promotion_id}/gates").json()
    assert [r["status"] for r in report["rules"]] == ["fail", "pass"]
    assert report["rules"][0]["figures"]["challenger"] == mc_acc
    assert report["rules"][1]["figures"]["champion"] == runs[champion["id"]]["results"]["quiz"]["mc_acc"]

    # The page an approver decides on shows both.
    web = Client()
    web.login(username="carol", password=PASSWORD)
    page = web.get(f"/p/demo/promotions/{promotion_id}").content.decode()
    assert 'id="suite-results"' in page and 'data-task="quiz"' in page and 'data-status="fail"' in page

    # An approver is refused; an admin without a reason too; an admin with one approves.
    blocked = carol.post(f"promotions/{promotion_id}/approve", json={"comment": "looks fine"})
    assert blocked.status_code == 409 and "mc_acc on core/quiz >= 1.5: fail" in blocked.json()["message"]
    assert dana.post(f"promotions/{promotion_id}/approve", json={}).status_code == 409
    overridden = dana.post(
        f"promotions/{promotion_id}/approve", json={"override_reason": "the floor is a test of the gate"}
    )
    assert overridden.status_code == 200, overridden.text
    check = GateCheck.objects.get(promotion_id=promotion_id)
    assert not check.passed and [r["status"] for r in check.results] == ["fail", "pass"]
    kept = alice.get(f"promotions/{promotion_id}/gates").json()
    assert kept["kept"] and kept["digest"] == check.digest
