"""Where a base model may be loaded from, checked where it is registered and where the control
worker loads its tokenizer; and a job's objective checked against its dataset when it is created."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from django.test import Client

from controlplane import tracking
from controlplane.datasets.tokenizers import tokenizer_load
from controlplane.errors import ValidationFailed
from controlplane.training.models import BaseModel, Job
from tests.broker import DISPATCH_QUEUE
from tests.factories import base_model_make, dataset_version_make
from tests.workers.test_uris import HOSTILE, hostile

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def runs(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A small model stored in project demo's experiment, in other's, and in one of no project."""
    files = tmp_path_factory.mktemp("uri-runs")
    (files / "config.json").write_text('{"model_type": "llama"}')
    return {
        owner: tracking.artifact_upload(
            files, experiment=experiment, run_name="m", artifact_path="model", tags={}
        ).removeprefix("runs:/")[:32]
        for owner, experiment in [
            ("own", "tuneyard/demo/base-models"),
            ("foreign", "tuneyard/other/base-models"),
            ("stray", "tests/base-models"),
        ]
    }


def _register(api, uri: str, name: str = "m"):
    return api.post("/api/v1/base-models", {"project": "demo", "name": name, "uri": uri}, format="json")


def test_every_hostile_uri_is_refused_at_the_api_naming_the_rule(api_for, runs, model_uri_roots):
    alice = api_for("alice")  # one set of people for the whole table: each case is one request
    places = {"root": Path(model_uri_roots), "foreign_run": runs["foreign"], "stray_run": runs["stray"]}
    wrong = {}
    for template, rule in HOSTILE:
        uri = hostile(template, **places)

        response = _register(alice, uri)

        body = response.json()
        named = f"breaks the rule '{rule}'" in body.get("message", "") and body.get("details", {}).get("rule")
        if response.status_code != 400 or body.get("error") != "validation_failed" or named != rule:
            wrong[uri] = (response.status_code, body)
    assert not wrong, wrong
    assert not BaseModel.objects.exists()


def test_every_admitted_form_is_registered(api_for, runs, tmp_path: Path, settings):
    settings.MODEL_URI_ROOTS = [*settings.MODEL_URI_ROOTS, "s3://models-bucket/approved"]
    alice = api_for("alice")
    admitted = [
        "meta-llama/Llama-3.1-8B",
        "org/model@v1.0",
        f"runs:/{runs['own']}/model",
        "models:/demo.tiny/3",
        "models:/demo.tiny@champion",
        str(tmp_path / "model"),  # under the suite's root; it need not exist on the control plane
        f"file://{tmp_path}/model",
        "s3://models-bucket/approved/llama-3",
    ]

    for number, uri in enumerate(admitted):
        response = _register(alice, uri, name=f"m{number}")
        assert response.status_code == 201, (uri, response.json())
        assert response.json()["uri"] == uri  # stored as given
    assert _register(alice, "s3://models-bucket/approved-not/llama", name="x").status_code == 400


def test_another_projects_run_is_refused_as_a_missing_run_is(api_for, runs):
    foreign = _register(api_for("alice"), f"runs:/{runs['foreign']}/model").json()["message"]
    missing = _register(api_for("alice"), f"runs:/{'0' * 32}/model").json()["message"]

    assert foreign.replace(runs["foreign"], "?") == missing.replace("0" * 32, "?")


def test_the_admin_form_applies_the_rule_too(people):
    admin = Client()
    people["alice"].is_staff = people["alice"].is_superuser = True
    people["alice"].save(update_fields=["is_staff", "is_superuser"])
    admin.force_login(people["alice"])
    form = {"project": people["demo"].pk, "name": "m", "description": "", "trust_remote_code": ""}

    refused = admin.post("/admin/training/basemodel/add/", form | {"uri": "file:///etc/passwd"})

    assert refused.status_code == 200 and "breaks the rule &#x27;under-root&#x27;" in refused.content.decode()
    assert not BaseModel.objects.exists()
    assert admin.post("/admin/training/basemodel/add/", form | {"uri": "org/model"}).status_code == 302
    assert BaseModel.objects.get().uri == "org/model"


def test_an_estimate_reads_nothing_where_a_stored_uri_breaks_the_rule(api_for, people):
    # A row stored before the rule: config.json outside every root must not be read, or the
    # estimate would tell a member what exists on the control plane's disk.
    with tempfile.TemporaryDirectory() as outside:
        (Path(outside) / "config.json").write_text('{"model_type": "llama", "hidden_size": 64}')
        model = base_model_make(people["demo"], uri=outside)
        dataset = dataset_version_make(people["demo"], people["alice"])
        body = {"project": "demo", "base_model": model.pk, "dataset_version": dataset.pk}

        response = api_for("alice").post("/api/v1/jobs/estimate", body, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["total_params"] is None
    assert any("breaks the rule 'under-root'" in note for note in response.json()["notes"])


# --- the control worker's tokenizer load ------------------------------------------------


def _tokenizer_error(people, uri: str, tmp_path: Path) -> str:
    with pytest.raises(ValidationFailed) as refused:
        tokenizer_load(project=people["demo"], name="tiny", uri=uri, dst=tmp_path / "dst")
    return refused.value.message


def test_a_tokenizer_load_says_the_same_whether_a_path_exists_or_not(people, tmp_path: Path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer_config.json").write_text("{not json")
    (tmp_path / "link").symlink_to("/etc")
    uris = [
        "/etc",  # exists, outside every root
        "/etc/passwd",
        "/nonexistent-dir-of-the-tests/model",  # does not exist, outside every root
        "file:///etc",
        str(tmp_path / "empty"),  # under the root: exists, no tokenizer in it
        str(tmp_path / "missing"),  # under the root: does not exist
        str(tmp_path / "broken"),
        str(tmp_path / "link"),
        "gopher://127.0.0.1:6379/_FLUSHALL",
    ]

    messages = {uri: _tokenizer_error(people, uri, tmp_path) for uri in uris}

    assert set(messages.values()) == {"The tokenizer of base model 'tiny' could not be loaded."}, messages


def test_a_tokenizer_loads_from_a_path_under_a_root(people, demo_model_dir: Path, tmp_path: Path):
    tokenizer = tokenizer_load(project=people["demo"], name="tiny", uri=str(demo_model_dir), dst=tmp_path)

    assert len(tokenizer("two plus three")["input_ids"]) > 0


def test_a_tokenizer_of_another_projects_run_is_not_loaded(people, runs, tmp_path: Path):
    message = _tokenizer_error(people, f"runs:/{runs['foreign']}/model", tmp_path)

    assert message == "The tokenizer of base model 'tiny' could not be loaded."
    assert not (tmp_path / "dst").exists()  # nothing was fetched


# --- a job's objective and its dataset ------------------------------------------------


@pytest.mark.parametrize("endpoint", ["/api/v1/jobs", "/api/v1/jobs/estimate"])
def test_dpo_on_a_dataset_of_instructions_is_refused_when_the_job_is_created(api_for, people, endpoint):
    model = base_model_make(people["demo"], uri="org/model")
    instructions = dataset_version_make(people["demo"], people["alice"], schema="instruction")
    body = {
        "project": "demo",
        "base_model": model.pk,
        "dataset_version": instructions.pk,
        "config": {"objective": {"name": "dpo"}},
    }

    response = api_for("alice").post(endpoint, body, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["error"] == "validation_failed"
    assert "preference rows (prompt, chosen, rejected)" in response.json()["message"]
    assert "instruction rows" in response.json()["message"]
    assert not Job.objects.exists()


def test_dpo_on_a_preference_dataset_is_queued(api_for, people, broker):
    model = base_model_make(people["demo"], uri="org/model")
    pairs = dataset_version_make(people["demo"], people["alice"], schema="preference")
    body = {
        "project": "demo",
        "base_model": model.pk,
        "dataset_version": pairs.pk,
        "config": {"objective": {"name": "dpo"}, "resources": {"queue": DISPATCH_QUEUE}},
    }

    response = api_for("alice").post("/api/v1/jobs", body, format="json")

    assert response.status_code == 201, response.content
    assert Job.objects.get().status == "queued"
