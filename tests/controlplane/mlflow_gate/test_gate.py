"""The MLflow gate, against the real MLflow server: an outsider's every call is refused,
a member's works, and a worker's attempt writes only the runs it created."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from django.test import Client
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from controlplane import tracking
from controlplane.training.credentials import tracking_token_issue
from controlplane.training.models import Job, JobStatus
from tests.factories import job_make

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def world(people, mlflow_server, tmp_path: Path):
    """One run with an artifact and one registered model in each of "demo" and "other"."""
    made = {}
    for slug in ("demo", "other"):
        artifact = tmp_path / f"{slug}.txt"
        artifact.write_text(f"{slug}'s data")
        uri = tracking.artifact_upload(
            artifact, experiment=f"tuneyard/{slug}/datasets", run_name=slug, artifact_path="dataset", tags={}
        )
        run_id = uri.removeprefix("runs:/").split("/")[0]
        run = MlflowClient(mlflow_server).get_run(run_id)
        version = tracking.model_version_register(name=f"{slug}.gated", source=uri, run_id=run_id)
        made[slug] = {
            "run": run_id,
            "experiment": run.info.experiment_id,
            "artifact": f"dataset/{slug}.txt",
            "model": f"{slug}.gated",
            "version": version,
        }
    return made


def _as(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _api(client: Client, method: str, endpoint: str, body: dict | None = None, **query):
    path = f"/mlflow/api/2.0/mlflow/{endpoint}"
    if method == "GET":
        return client.get(path, query)
    return client.post(
        path, json.dumps(body or {}), content_type="application/json", HTTP_ORIGIN="http://testserver"
    )


def test_an_outsider_is_refused_every_call_on_another_projects_mlflow(people, world):
    charlie = _as(people["charlie"])  # admin of "other", nothing in "demo"
    demo = world["demo"]

    listed = _api(charlie, "POST", "experiments/search", {"max_results": 1000})
    names = {e["name"] for e in listed.json()["experiments"]}
    assert listed.status_code == 200 and "tuneyard/other/datasets" in names
    assert not any(name.startswith("tuneyard/demo") for name in names)

    artifact = charlie.get("/mlflow/get-artifact", {"path": demo["artifact"], "run_uuid": demo["run"]})
    assert artifact.status_code == 404 and b"demo's data" not in artifact.content
    stored = "/mlflow/api/2.0/mlflow-artifacts/artifacts/" + "/".join(
        [demo["experiment"], demo["run"], "artifacts", demo["artifact"]]
    )
    assert charlie.get(stored).status_code == 404

    tagged = _api(charlie, "POST", "runs/set-tag", {"run_id": demo["run"], "key": "k", "value": "v"})
    assert tagged.status_code == 404
    assert "k" not in MlflowClient(tracking.settings.MLFLOW_TRACKING_URI).get_run(demo["run"]).data.tags

    models = _api(charlie, "GET", "registered-models/search", max_results=1000).json()
    assert [m["name"] for m in models.get("registered_models", [])] == ["other.gated"]
    versions = _api(charlie, "GET", "model-versions/search", filter="name='demo.gated'").json()
    assert versions.get("model_versions", []) == []

    for model in ("demo.gated", "other.gated"):  # not even in his own project: only Tuneyard moves aliases
        alias = {"name": model, "alias": "production", "version": "1"}
        assert _api(charlie, "POST", "registered-models/alias", alias).status_code == 403
    assert tracking.alias_get(name="other.gated", alias="production") is None

    # Another project's run reads exactly as a missing one: no oracle of what exists.
    theirs = _api(charlie, "GET", "runs/get", run_id=demo["run"])
    missing = _api(charlie, "GET", "runs/get", run_id="0" * 32)
    assert theirs.status_code == missing.status_code == 404 and theirs.json() == missing.json()
    # Nor does a path that is decided as one thing and sent as another once its dots resolve.
    for sneaky in ("static-files/../api/2.0/mlflow/runs/get", "static-files/%2e%2e/api/2.0/mlflow/runs/get"):
        assert charlie.get(f"/mlflow/{sneaky}", {"run_id": demo["run"]}).status_code == 404
    # A change names its run in its JSON body only: a query beside it, or another body, is refused.
    tag = {"run_id": world["other"]["run"], "key": "k", "value": "v"}
    with_query = charlie.post(
        f"/mlflow/api/2.0/mlflow/runs/set-tag?run_id={demo['run']}",
        json.dumps(tag),
        content_type="application/json",
        HTTP_ORIGIN="http://testserver",
    )
    as_text = charlie.post(
        "/mlflow/api/2.0/mlflow/runs/set-tag",
        json.dumps(tag),
        content_type="text/plain",
        HTTP_ORIGIN="http://testserver",
    )
    assert with_query.status_code == as_text.status_code == 400
    # Naming a run twice (one of his, one not) does not slip past the check.
    both = charlie.get("/mlflow/api/2.0/mlflow/runs/get", {"run_id": [world["other"]["run"], demo["run"]]})
    assert both.status_code == 404


def test_nobody_signed_out_reaches_mlflow(world):
    anonymous = Client()
    assert _api(anonymous, "POST", "experiments/search", {}).status_code == 401
    assert anonymous.get("/mlflow/").status_code == 401
    forged = Client(HTTP_AUTHORIZATION="Bearer not-a-token")
    assert _api(forged, "GET", "runs/get", run_id=world["demo"]["run"]).status_code == 401


def test_members_read_their_project_and_only_members_change_a_run(people, world):
    demo = world["demo"]
    alice, viv = _as(people["alice"]), _as(people["viv"])
    artifact = alice.get("/mlflow/get-artifact", {"path": demo["artifact"], "run_uuid": demo["run"]})
    assert artifact.status_code == 200 and b"".join(artifact.streaming_content) == b"demo's data"
    assert _api(viv, "GET", "runs/get", run_id=demo["run"]).status_code == 200

    viewer_tag = _api(viv, "POST", "runs/set-tag", {"run_id": demo["run"], "key": "k", "value": "v"})
    assert viewer_tag.status_code == 403 and "member" in viewer_tag.json()["message"]
    assert (
        _api(alice, "POST", "runs/set-tag", {"run_id": demo["run"], "key": "k", "value": "v"}).status_code
        == 200
    )
    # A change from another site's page (no Origin of ours) is refused even with alice's session.
    forged = alice.post(
        "/mlflow/api/2.0/mlflow/runs/set-tag",
        json.dumps({"run_id": demo["run"], "key": "k", "value": "x"}),
        content_type="application/json",
        HTTP_ORIGIN="https://evil.example",
    )
    assert forged.status_code == 403
    # Logging into a run is the workers' part, not a person's.
    logged = _api(
        alice, "POST", "runs/log-metric", {"run_id": demo["run"], "key": "m", "value": 1, "timestamp": 0}
    )
    assert logged.status_code == 403


def test_the_mlflow_ui_is_served_to_members(people, world):
    page = _as(people["alice"]).get("/mlflow/")
    assert page.status_code == 200 and b"MLflow" in b"".join(page.streaming_content)


@pytest.fixture
def gate_client(live_server, monkeypatch):
    """MLflow's own client, pointed at the gate as a worker's is."""

    def make(token: str) -> MlflowClient:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
        return MlflowClient(f"{live_server.url}/mlflow")

    return make


def _running_job(people) -> Job:
    job = job_make(people["demo"], people["alice"])
    Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING)
    return job


def test_a_workers_attempt_writes_only_the_runs_it_created(people, world, gate_client, tmp_path: Path):
    job = _running_job(people)
    client = gate_client(tracking_token_issue(job_id=job.pk, attempt=job.attempt))

    experiment = client.get_experiment_by_name("tuneyard/demo")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("tuneyard/demo")
    run = client.create_run(experiment_id, run_name="attempt")
    client.log_metric(run.info.run_id, "loss", 1.5)
    (tmp_path / "note.txt").write_text("mine")
    client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"), "notes")
    assert client.get_metric_history(run.info.run_id, "loss")[0].value == 1.5
    # It reads its project's data (its dataset, its base model)...
    local = client.download_artifacts(world["demo"]["run"], world["demo"]["artifact"], str(tmp_path))
    assert Path(local).read_text() == "demo's data"

    # ...but writes no run it did not create, in its project or another.
    with pytest.raises(MlflowException, match="only the runs its own attempt created"):
        client.set_tag(world["demo"]["run"], "forged", "1")
    with pytest.raises(MlflowException, match="Not found"):
        client.set_tag(world["other"]["run"], "forged", "1")
    with pytest.raises(MlflowException, match="Not found"):
        client.create_run(world["other"]["experiment"])
    with pytest.raises(MlflowException, match="Only Tuneyard changes the model registry"):
        client.set_registered_model_alias("demo.gated", "production", "1")

    # Once the attempt ends, its token opens nothing.
    Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED)
    with pytest.raises(MlflowException, match="holds no running attempt"):
        client.log_metric(run.info.run_id, "loss", 1.0)


def test_a_token_of_another_attempt_is_refused(people, world, gate_client):
    job = _running_job(people)
    stale = gate_client(tracking_token_issue(job_id=job.pk, attempt=job.attempt + 1))
    with pytest.raises(MlflowException, match="holds no running attempt"):
        stale.get_run(world["demo"]["run"])
    assert os.environ["MLFLOW_TRACKING_TOKEN"]  # the fixture set it, and restores it after


GET_RUN = (
    "query MlflowGetRun($data: MlflowGetRunInput!) { mlflowGetRun(input: $data) { run { info { runId } } } }"
)


def _graphql(client: Client, query: str, variables: dict | None = None):
    body = {"query": query, "operationName": None, "variables": variables or {}}
    return client.post(
        "/mlflow/graphql", json.dumps(body), content_type="application/json", HTTP_ORIGIN="http://testserver"
    )


def test_the_uis_graphql_reads_only_what_rest_would(people, world):
    run = world["demo"]["run"]
    alice, charlie = _as(people["alice"]), _as(people["charlie"])
    read = _graphql(alice, GET_RUN, {"data": {"runId": run}})
    assert read.status_code == 200
    assert json.loads(b"".join(read.streaming_content))["data"]["mlflowGetRun"]["run"]["info"]["runId"] == run
    assert _graphql(charlie, GET_RUN, {"data": {"runId": run}}).status_code == 404
    # The run named inline instead of by a variable is checked the same way.
    get_inline = '{ mlflowGetRun(input: {runId: "RUN"}) { run { info { runId } } } }'
    assert _graphql(charlie, get_inline.replace("RUN", run)).status_code == 404
    # A second field beside an allowed one, a mutation, a search by free filter: closed.
    beside = get_inline.replace("} } } }", '} } } test(inputString: "x") { output } }')
    assert _graphql(alice, beside.replace("RUN", run)).status_code == 403
    assert _graphql(alice, 'mutation { testMutation(inputString: "x") { output } }').status_code == 403
    search = (
        "{ mlflowSearchModelVersions(input: {filter: \"name='demo.gated'\"}) { modelVersions { name } } }"
    )
    assert _graphql(charlie, search).status_code == 403


def test_a_read_scoped_token_reads_but_changes_nothing(people, world):
    from controlplane.accounts.models import TokenScope
    from controlplane.accounts.services import api_token_create

    run = world["demo"]["run"]
    _, secret = api_token_create(user=people["alice"], name="reader", scopes=[TokenScope.READ])
    reader = Client(HTTP_AUTHORIZATION=f"Token {secret}")
    assert _api(reader, "GET", "runs/get", run_id=run).status_code == 200
    tagged = _api(reader, "POST", "runs/set-tag", {"run_id": run, "key": "by-reader", "value": "v"})
    assert tagged.status_code == 403 and "read" in tagged.json()["message"]
    assert "by-reader" not in MlflowClient(tracking.settings.MLFLOW_TRACKING_URI).get_run(run).data.tags
