"""The `tuneyard` command line, run as a process against the live control plane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.site.demo import demo_jsonl
from tests.conftest import PASSWORD

ROOT = Path(__file__).resolve().parents[2]


def tuneyard(*args: str, url: str, token: str | None = None, password: str | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEYARD_")}
    env |= {"TUNEYARD_URL": url}
    if token:
        env["TUNEYARD_TOKEN"] = token
    if password:
        env["TUNEYARD_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, "-m", "tuneyard_cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_without_a_token_or_a_server_it_says_so():
    no_token = tuneyard("projects", url="http://127.0.0.1:9")
    assert no_token.returncode == 2 and "no token" in no_token.stderr
    unreachable = tuneyard("projects", url="http://127.0.0.1:9", token="t")
    assert unreachable.returncode == 3 and "cannot reach" in unreachable.stderr


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_ci_drives_the_whole_path_from_the_shell(people, live_server, worker, tiny_model_uri, tmp_path):
    from controlplane.training.models import BaseModel

    base = BaseModel.objects.create(project=people["demo"], name="tiny", uri=tiny_model_uri)
    url = live_server.url
    token = tuneyard("token", "alice", url=url, password=PASSWORD).stdout.strip()
    carol = tuneyard("token", "carol", url=url, password=PASSWORD).stdout.strip()
    assert token.startswith("tyk_") and carol.startswith("tyk_") and token != carol

    data = tmp_path / "data.jsonl"
    data.write_bytes(demo_jsonl(32))
    uploaded = tuneyard("upload", str(data), "--project", "demo", "--name", "cli-data", url=url, token=token)
    assert uploaded.returncode == 0, uploaded.stderr
    dataset = json.loads(uploaded.stdout)["id"]

    config = tmp_path / "config.yaml"
    config.write_text("method: {name: lora, r: 4}\nhyperparameters: {max_steps: 6, max_seq_length: 64}\n")
    # Names where a person would type them: the base model's, the dataset's (its newest version).
    submitted = tuneyard(
        "submit", "--project", "demo", "--base-model", "tiny", "--dataset-version", "cli-data",
        "--config", str(config), "--wait", url=url, token=token,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    assert job["status"] == "succeeded" and job["config"]["method"]["r"] == 4
    assert (job["base_model"], job["dataset_version"]) == (base.pk, dataset)
    unknown = tuneyard("submit", "--project", "demo", "--base-model", "huge", "--dataset-version", "cli-data",
                       url=url, token=token)  # fmt: skip
    assert unknown.returncode == 2 and "no base model named 'huge' (it has: tiny)" in unknown.stderr
    table = tuneyard("--output", "table", "jobs", "list", "--project", "demo", url=url, token=token)
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:4] == [
        "ID",
        "NAME",
        "KIND",
        "STATUS",
    ]
    assert str(job["id"]) in table.stdout and "succeeded" in table.stdout
    shown = json.loads(
        tuneyard("datasets", "show", "cli-data:v1", "--project", "demo", url=url, token=token).stdout
    )
    assert shown["id"] == dataset
    assert "100.0%" in submitted.stderr  # the progress bar reached its end

    logs = tuneyard("logs", str(job["id"]), url=url, token=token)
    assert logs.returncode == 0 and logs.stdout.strip()

    version = json.loads(
        tuneyard("register", str(job["id"]), "--name", "cli-lora", url=url, token=token).stdout
    )
    promotion = json.loads(tuneyard("promote", str(version["id"]), url=url, token=token).stdout)
    refused = tuneyard("approve", str(promotion["id"]), url=url, token=token)
    assert refused.returncode == 2 and "approver" in refused.stderr
    assert tuneyard("approve", str(promotion["id"]), url=url, token=carol).returncode == 0
    deployed = json.loads(
        tuneyard("deployed", "production", "--model", "cli-lora", url=url, token=token).stdout
    )
    assert [(d["model_name"], d["approved_by"]) for d in deployed["results"]] == [("cli-lora", "carol")]

    # Cancel, retry and clone, each twice where it should be idempotent.
    clone = json.loads(tuneyard("clone", str(job["id"]), url=url, token=token).stdout)
    assert clone["id"] != job["id"]
    for _ in range(2):
        cancelled = tuneyard("cancel", str(clone["id"]), url=url, token=token)
        assert cancelled.returncode == 0 and json.loads(cancelled.stdout)["status"] in (
            "cancelled",
            "cancelling",
        )
    assert tuneyard("wait", str(clone["id"]), url=url, token=token).returncode == 1  # ended, not succeeded
    for _ in range(2):
        retried = json.loads(tuneyard("retry", str(clone["id"]), url=url, token=token).stdout)
        assert retried["attempt"] == 2
    assert tuneyard("wait", str(clone["id"]), url=url, token=token).returncode == 0
    bad = tuneyard("retry", str(job["id"]), url=url, token=token)
    assert bad.returncode == 2 and "clone it" in bad.stderr


def test_a_sweep_from_a_yaml_file_runs_to_its_end(
    people, live_server, worker, tiny_model_uri, tmp_path, settings
):
    from django.db import connection

    from controlplane.training.models import BaseModel
    from tests.factories import dataset_version_make

    if connection.vendor != "postgresql":
        settings.OPTUNA_STORAGE_URL = f"sqlite:///{tmp_path / 'optuna.sqlite3'}"
    data = tmp_path / "data.jsonl"
    data.write_bytes(demo_jsonl(32))
    base = BaseModel.objects.create(project=people["demo"], name="tiny", uri=tiny_model_uri)
    dataset = dataset_version_make(people["demo"], people["alice"], uri=str(data))
    url = live_server.url
    token = tuneyard("token", "alice", url=url, password=PASSWORD).stdout.strip()
    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        f"name: cli sweep\nbase_model: {base.pk}\ndataset_version: {dataset.pk}\n"
        "config: {hyperparameters: {max_steps: 6, max_seq_length: 64, checkpoint_every_steps: null}}\n"
        "search_space:\n  hyperparameters.learning_rate: {type: float, low: 0.0001, high: 0.01, log: true}\n"
        "n_trials: 3\nparallelism: 2\npruner: none\nsampler: random\n"
    )
    done = tuneyard("sweep", "create", str(spec), "--project", "demo", "--wait", url=url, token=token)
    assert done.returncode == 0, done.stderr[-2000:]
    sweep = json.loads(done.stdout)
    assert sweep["status"] == "finished" and [t["state"] for t in sweep["trials"]] == ["complete"] * 3
    assert "3/3 trials ended" in done.stderr

    spec.write_text(spec.read_text().replace("hyperparameters.learning_rate", "hyperparameters.nonsense"))
    refused = tuneyard("sweep", "create", str(spec), "--project", "demo", url=url, token=token)
    assert refused.returncode == 2 and "is not a tunable parameter" in refused.stderr
    again = tuneyard("sweep", "add-trials", str(sweep["id"]), "--count", "0", url=url, token=token)
    assert again.returncode == 2 and "count: Input should be greater than or equal to 1" in again.stderr


@pytest.mark.django_db(transaction=True)
def test_a_large_file_goes_up_in_pieces_and_an_interrupted_upload_resumes(
    people, live_server, mlflow_server, tmp_path, settings
):
    import httpx

    settings.DATASET_STAGING_DIR = tmp_path / "uploads"
    url = live_server.url
    token = tuneyard("token", "alice", url=url, password=PASSWORD).stdout.strip()
    data = tmp_path / "data.jsonl"
    data.write_bytes(demo_jsonl(40))
    size = data.stat().st_size
    piece_mib = str(1000 / 1024**2)  # about 1,000 bytes a piece: several pieces
    whole = tuneyard("upload", str(data), "--project", "demo", "--name", "pieces", "--piece-mib", piece_mib,
                     url=url, token=token)  # fmt: skip
    assert whole.returncode == 0, whole.stderr
    assert json.loads(whole.stdout)["row_count"] == 40 and "upload 100.0%" in whole.stderr

    # An upload that stopped a third of the way (its first piece sent by hand), continued by the CLI.
    other = tmp_path / "other.jsonl"
    other.write_bytes(demo_jsonl(41))
    api = httpx.Client(base_url=f"{url}/api/v1/", headers={"Authorization": f"Token {token}"})
    body = {"project": "demo", "filename": "other.jsonl", "size": other.stat().st_size}
    begun = api.post("uploads", json=body)
    upload_id = begun.json()["id"]
    third = other.read_bytes()[: size // 3]
    assert api.patch(f"uploads/{upload_id}", content=third, headers={"Upload-Offset": "0"}).status_code == 200
    resumed = tuneyard("upload", str(other), "--project", "demo", "--name", "pieces", "--resume", upload_id,
                       "--piece-mib", piece_mib, url=url, token=token)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["row_count"] == 41 and json.loads(resumed.stdout)["version"] == 2
    # A resume of another file's upload is refused with a sentence.
    wrong = tuneyard("upload", str(data), "--project", "demo", "--name", "pieces", "--resume", upload_id,
                     url=url, token=token)  # fmt: skip
    assert wrong.returncode == 2 and "refused" in wrong.stderr


@pytest.mark.django_db(transaction=True)
def test_evaluate_launches_an_evaluate_job_and_a_bad_one_is_refused_with_the_sentence(
    people, live_server, tmp_path
):
    from controlplane.training.models import Job
    from tests.factories import FACTORY_QUEUE, base_model_make, dataset_version_make

    base = base_model_make(people["demo"])
    quiz = dataset_version_make(people["demo"], people["alice"], schema="multiple_choice", row_count=4)
    url = live_server.url
    token = tuneyard("token", "alice", url=url, password=PASSWORD).stdout.strip()
    config = tmp_path / "evaluate.yaml"
    # No worker serves this queue: the job stays queued for the test to read.
    config.write_text(f"evaluation:\n  batch_size: 2\nresources:\n  queue: {FACTORY_QUEUE}\n")
    common = ["--project", "demo", "--base-model", str(base.pk), "--dataset-version", str(quiz.pk)]

    launched = tuneyard(
        "evaluate", *common, "--metric", "multiple_choice", "--num-fewshot", "2", "--config", str(config),
        url=url, token=token,
    )  # fmt: skip
    refused = tuneyard("evaluate", *common, "--metric", "perplexity", url=url, token=token)

    assert launched.returncode == 0, launched.stderr
    job = json.loads(launched.stdout)
    assert (job["kind"], job["queue"]) == ("evaluate", FACTORY_QUEUE)
    evaluation = job["config"]["evaluation"]
    assert (evaluation["metrics"], evaluation["num_fewshot"], evaluation["batch_size"]) == (
        ["multiple_choice"],
        2,
        2,
    )
    assert refused.returncode == 2
    assert "perplexity needs a dataset of schema text" in refused.stderr
    assert Job.objects.count() == 1
