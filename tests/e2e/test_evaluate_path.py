"""An evaluate job over real parts: launched through the REST API, run by the session's Celery
worker on the tiny model, its metrics on the job's API, its page and its MLflow run."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from mlflow import MlflowClient

from tests.conftest import PASSWORD
from tests.e2e.client import api, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

QUESTIONS = [
    {"question": "What is the capital of France?", "choices": ["Paris", "London", "Rome"], "answer": "A"},
    {"question": "How many legs has a cat?", "choices": ["two", "four", "many"], "answer": "B"},
    {"question": "Two plus three is", "choices": ["five", "six"], "answer": "A"},
    {"question": "Which is a fruit?", "choices": ["apple", "brick", "cloud"], "answer": "A"},
]


def test_an_evaluate_job_runs_on_the_worker_and_its_metrics_show(
    people, live_server, worker, tiny_model_uri, mlflow_server
):
    alice = api(live_server, "alice")
    base = alice.post("base-models", json={"project": "demo", "name": "tiny", "uri": tiny_model_uri})
    assert base.status_code == 201, base.text
    upload = "".join(json.dumps(row) + "\n" for row in QUESTIONS).encode()
    dataset = alice.post(
        "datasets",
        data={"project": "demo", "name": "quiz"},
        files={"file": ("quiz.jsonl", upload, "application/jsonl")},
    )
    assert dataset.status_code == 201, dataset.text
    assert dataset.json()["format"] == "multiple_choice"

    launched = alice.post(
        "jobs",
        json={
            "project": "demo",
            "kind": "evaluate",
            "base_model": base.json()["id"],
            "dataset_version": dataset.json()["id"],
            "config": {"evaluation": {"metrics": ["multiple_choice"], "num_fewshot": 1}},
        },
    )
    assert launched.status_code == 201, launched.text
    job, seen = wait_for(alice, launched.json()["id"], {"succeeded", "failed"}, timeout=120)

    assert job["status"] == "succeeded", job["error"]
    assert job["kind"] == "evaluate" and "queued" not in seen[1:]
    metrics = job["metrics"]
    assert set(metrics) == {"mc_acc", "mc_acc_norm"}
    # Four questions: each accuracy is a whole number of them.
    assert all(value * len(QUESTIONS) in range(len(QUESTIONS) + 1) for value in metrics.values())
    # Its log, and each question's chosen answer as a table in its run (the compare page reads it).
    assert set(job["artifacts"]) == {"log", "predictions"}
    assert job["artifacts"]["predictions"] == f"runs:/{job['mlflow_run_id']}/tables/predictions.parquet"

    run = MlflowClient(mlflow_server).get_run(job["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["tuneyard.kind"] == "evaluate"
    assert run.data.metrics == metrics
    assert run.data.params["num_fewshot"] == "1"

    web = Client()
    web.login(username="alice", password=PASSWORD)
    page = web.get(f"/jobs/{job['id']}/").content.decode()
    for name, value in metrics.items():
        assert f"<code>{name}</code></td><td>{value:.4f}</td>" in page
    assert "loss-chart" not in page
