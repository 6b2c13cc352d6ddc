"""Rolling production back through the REST API over real parts (the live control plane, a worker
training the tiny model, the MLflow server): a governed rollback that another approver decides, then
an admin's emergency rollback with a reason; each time MLflow's alias moves with the deployment."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from controlplane.accounts.models import Role
from controlplane.accounts.services import member_add
from tests.conftest import PASSWORD
from tests.e2e.client import FAST_LORA, api, submit, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

QUICK = {**FAST_LORA, "hyperparameters": {"max_steps": 4, "batch_size": 8, "max_seq_length": 64}}
MODEL = "rolled"


def _alias(mlflow: MlflowClient) -> int:
    return int(mlflow.get_model_version_by_alias(f"demo.{MODEL}", "production").version)


def test_production_rolls_back_by_request_and_by_emergency_and_the_alias_follows(
    setup, people, live_server, mlflow_server
):
    alice, carol = setup["alice"], api(live_server, "carol")
    mlflow = MlflowClient(mlflow_server)
    jobs = [submit(setup, QUICK) for _ in range(2)]
    versions = []
    for job_id in jobs:
        job, _ = wait_for(alice, job_id, {"succeeded", "failed"})
        assert job["status"] == "succeeded", job["error"]
        registered = alice.post("model-versions", json={"job": job_id, "name": MODEL})
        assert registered.status_code == 201, registered.text
        # Registering the same job under another name is refused, naming the version it has.
        again = alice.post("model-versions", json={"job": job_id, "name": "renamed"})
        assert again.status_code == 409 and MODEL in again.json()["message"]
        version = registered.json()
        asked = alice.post("promotions", json={"model_version": version["id"], "target": "production"})
        approved = carol.post(f"promotions/{asked.json()['id']}/approve", json={})
        assert approved.status_code == 200, approved.text
        versions.append(version)
    first, second = versions
    assert _alias(mlflow) == second["mlflow_version"]

    # A governed rollback: asked by a member, nothing moves until another approver decides.
    asked = alice.post(
        "rollbacks", json={"model_version": first["id"], "target": "production", "comment": "v2 regressed"}
    )
    assert asked.status_code == 201, asked.text
    rollback = asked.json()
    assert (rollback["kind"], rollback["status"]) == ("rollback", "requested")
    assert _alias(mlflow) == second["mlflow_version"]
    assert alice.post(f"promotions/{rollback['id']}/approve", json={}).status_code == 403
    decided = carol.post(f"promotions/{rollback['id']}/approve", json={"comment": "agreed"})
    assert decided.status_code == 200, decided.text
    assert _alias(mlflow) == first["mlflow_version"]
    deployed = alice.get("deployments/production", params={"project": "demo", "model": MODEL}).json()
    assert [d["mlflow_version"] for d in deployed["results"]] == [first["mlflow_version"]]

    # An admin's emergency rollback: no second approver, a reason kept, the alias moves at once.
    member_add(project=people["demo"], username="ada", role=Role.ADMIN, password=PASSWORD)
    ada = api(live_server, "ada")
    no_reason = ada.post(
        "rollbacks", json={"model_version": second["id"], "target": "production", "emergency": True}
    )
    assert no_reason.status_code == 400 and "reason" in no_reason.json()["message"]
    emergency = ada.post(
        "rollbacks",
        json={
            "model_version": second["id"],
            "target": "production",
            "emergency": True,
            "reason": "v1 times out under load",
        },
    )
    assert emergency.status_code == 201, emergency.text
    done = emergency.json()
    assert (done["status"], done["requested_by"], done["decided_by"]) == ("approved", "ada", "ada")
    assert done["override_reason"] == "v1 times out under load"
    assert done["deployment"]["mlflow_version"] == second["mlflow_version"]
    assert _alias(mlflow) == second["mlflow_version"]

    history = alice.get("deployments/production/history", params={"project": "demo", "model": MODEL}).json()
    assert [(h["mlflow_version"], h["kind"], h["approved_by"], h["current"]) for h in history["results"]] == [
        (first["mlflow_version"], "promote", "carol", False),
        (second["mlflow_version"], "promote", "carol", False),
        (first["mlflow_version"], "rollback", "carol", False),
        (second["mlflow_version"], "rollback", "ada", True),
    ]
