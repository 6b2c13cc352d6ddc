"""The whole path through the REST API, as CI/CD would drive it, over real parts:
the live control plane, a Celery worker process on Redis, an MLflow server, and
the database the suite runs on (PostgreSQL in CI)."""

from __future__ import annotations

import time

import pytest
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts as mlflow_download

from tests.e2e.client import FAST_LORA, api, submit, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_dataset_to_approved_deployment_through_the_api(setup, live_server, mlflow_server):
    alice = setup["alice"]
    job_id = submit(setup, FAST_LORA)
    job, seen = wait_for(alice, job_id, {"succeeded", "failed"})
    assert job["status"] == "succeeded", job["error"]
    assert seen[-1] == "succeeded" and "queued" not in seen[1:]
    assert job["progress"] == 1.0 and job["step"] == 24 == job["total_steps"]
    assert job["mlflow_run_id"] and job["artifacts"]["adapter"]

    # The loss curve reached the control plane and it went down.
    series = alice.get(f"jobs/{job_id}/metrics").json()["series"]["loss"]
    assert len(series["values"]) >= 20
    assert series["values"][-1] < series["values"][0]

    # MLflow holds the run with its metrics and the adapter.
    mlflow = MlflowClient(mlflow_server)
    run = mlflow.get_run(job["mlflow_run_id"])
    assert run.data.tags["tuneyard.job_id"] == str(job_id)
    assert len(mlflow.get_metric_history(run.info.run_id, "loss")) >= 20
    assert "adapter_model.safetensors" in {
        a.path.split("/")[-1] for a in mlflow.list_artifacts(run.info.run_id, "adapter")
    }

    # The log: followed through the API while it ran, kept whole with the run at the end.
    logs = alice.get(f"jobs/{job_id}/logs").json()
    assert logs["finished"] and logs["lines"]
    assert not [line for line in logs["lines"] if "View run" in line]  # the job's output, not MLflow's
    assert alice.get(f"jobs/{job_id}/logs", params={"after": logs["next"]}).json()["lines"] == []
    assert job["artifacts"]["log"] == f"runs:/{run.info.run_id}/logs/attempt-1.log"
    stored = mlflow_download(artifact_uri=job["artifacts"]["log"], tracking_uri=mlflow_server)
    assert logs["lines"][0] in open(stored).read()

    # The worker that ran it reports itself: online, on the cpu queue, no GPUs.
    workers = {w["name"]: w for w in alice.get("workers").json()["results"]}
    assert workers["test-worker"]["online"] and workers["test-worker"]["queues"] == ["cpu"]
    assert workers["test-worker"]["gpus"] == []

    version = alice.post("model-versions", json={"job": job_id, "name": "tiny-lora"})
    assert version.status_code == 201, version.text
    version = version.json()
    promotion = alice.post("promotions", json={"model_version": version["id"], "target": "production"})
    assert promotion.status_code == 201, promotion.text
    promotion_id = promotion.json()["id"]

    refused = alice.post(f"promotions/{promotion_id}/approve", json={})
    assert refused.status_code == 403 and "approver" in refused.json()["message"]
    carol = api(live_server, "carol")
    approved = carol.post(f"promotions/{promotion_id}/approve", json={"comment": "ship it"})
    assert approved.status_code == 200, approved.text
    assert (approved.json()["status"], approved.json()["deployment"]["target"]) == ("approved", "production")

    deployed = alice.get("deployments/production").json()["results"]
    assert len(deployed) == 1
    d = deployed[0]
    assert (d["model_name"], d["mlflow_version"], d["approved_by"]) == (
        "tiny-lora",
        version["mlflow_version"],
        "carol",
    )
    assert d["mlflow_model_uri"] == f"models:/demo.tiny-lora/{version['mlflow_version']}" and d["approved_at"]
    # ... and MLflow itself agrees: the production alias points at that version.
    assert mlflow.get_model_version_by_alias("demo.tiny-lora", "production").version == str(
        version["mlflow_version"]
    )


def test_a_running_job_can_be_cancelled_and_the_worker_carries_on(setup, model_uri_roots):
    alice = setup["alice"]
    long = dict(FAST_LORA, hyperparameters={**FAST_LORA["hyperparameters"], "max_steps": 100_000})
    job_id = submit(setup, long)
    wait_for(alice, job_id, {"running"})
    # Wait for real training steps, so the cancel hits a busy trainer.
    deadline = time.monotonic() + 120
    while alice.get(f"jobs/{job_id}").json()["step"] < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert alice.post(f"jobs/{job_id}/cancel").json()["status"] == "cancelling"
    job, _ = wait_for(alice, job_id, {"cancelled", "failed", "succeeded"}, timeout=60)
    assert job["status"] == "cancelled"
    assert alice.post(f"jobs/{job_id}/cancel").json()["status"] == "cancelled"  # idempotent

    # The worker survived: a bad job next fails cleanly with a reason (a path the rule admits, not there).
    bad_base = alice.post(
        "base-models",
        json={"project": "demo", "name": "missing", "uri": f"{model_uri_roots}/nonexistent/model"},
    ).json()
    failed_id = submit(setup, FAST_LORA, base_model=bad_base["id"])
    failed, _ = wait_for(alice, failed_id, {"failed", "succeeded"})
    assert failed["status"] == "failed" and failed["error"]

    # A job needing a GPU that lands on a CPU worker fails with the reason, not on the CPU.
    gpu_job = dict(FAST_LORA, resources={"gpus": 1, "queue": "cpu"})
    gpu_id = submit(setup, gpu_job)
    refused, _ = wait_for(alice, gpu_id, {"failed", "succeeded"})
    assert refused["status"] == "failed" and "needs 1 GPU(s); this worker has 0" in refused["error"]


def test_bad_job_submissions_are_400s_that_store_nothing(setup):
    alice = setup["alice"]
    cases = [
        ({"config": {"method": {"name": "nope"}}}, "config.method"),
        ({"config": {"hyperparameters": {"learning_rate": 0}}}, "learning_rate"),
        ({"config": "lora please"}, "config: Input should be a valid dictionary"),
        ({"base_model": "abc"}, "base_model: must be a whole number"),
        ({"dataset_version": None}, "dataset_version: "),
    ]
    for change, message in cases:
        body = {
            "project": "demo",
            "base_model": setup["base"],
            "dataset_version": setup["dataset"],
            "config": {},
        } | change
        response = alice.post("jobs", json=body)
        assert response.status_code == 400 and message in response.json()["message"], (
            change,
            response.text,
        )
    missing = alice.post(
        "jobs", json={"project": "demo", "base_model": 999999, "dataset_version": setup["dataset"]}
    )
    assert missing.status_code == 404
    assert alice.get("jobs", params={"project": "demo"}).json()["results"] == []
