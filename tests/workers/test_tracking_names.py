"""MLflow runs are named after their jobs and tagged with who ran them on what, linked back to the job
page; an evaluation's per-row answers are a Parquet table in its run that the control plane reads back."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from controlplane import tracking as controlplane_tracking
from controlplane.training.services import job_spec_build
from tests.factories import job_make
from workers.engine.evaluation.suite import PredictionRow
from workers.engine.job import PREDICTIONS_FILE, PREDICTIONS_FOLDER, attempt_run, predictions_parquet
from workers.spec import JobSpec

pytestmark = pytest.mark.django_db


@pytest.fixture
def tracked(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    return MlflowClient(tracking_uri=mlflow_server)


def test_the_spec_names_the_run_after_the_job_and_tags_its_creator_data_and_model(people, settings):
    settings.PUBLIC_URL = "https://tuneyard.example.com/"
    job = job_make(people["demo"], people["bob"])
    spec = JobSpec.model_validate(job_spec_build(job).model_dump(mode="json"))  # survives the trip
    version = job.dataset_version
    assert spec.run_name == f"job {job.pk} · {job.name}"
    assert spec.run_tags == {
        "mlflow.user": "bob",
        "tuneyard.job_name": job.name,
        "tuneyard.dataset_version": f"{version.dataset.name}:v{version.version}",
        "tuneyard.dataset_sha256": version.sha256,
        "tuneyard.base_model": job.base_model.name,
        "tuneyard.base_model_uri": job.base_model.uri,
        "tuneyard.url": f"https://tuneyard.example.com/jobs/{job.pk}/",
    }


def test_the_mlflow_run_carries_the_jobs_name_and_tags(people, tracked: MlflowClient, capsys):
    job = job_make(people["demo"], people["alice"])
    spec = job_spec_build(job)
    with attempt_run(spec) as run:
        pass
    stored = tracked.get_run(run.run_id)
    assert stored.info.run_name == f"job {job.pk} · {job.name}"
    assert stored.info.user_id == "alice"  # MLflow's "User" column, from mlflow.user
    tags = stored.data.tags
    assert tags["tuneyard.job_id"] == str(job.pk) and tags["tuneyard.project"] == "demo"
    assert tags["tuneyard.dataset_version"].endswith(":v1")
    assert tags["tuneyard.dataset_sha256"] == job.dataset_version.sha256
    assert tags["tuneyard.base_model"] == job.base_model.name
    assert tags["tuneyard.url"].endswith(f"/jobs/{job.pk}/")


def test_a_spec_from_before_run_names_still_names_its_run(people, tracked: MlflowClient, capsys):
    job = job_make(people["demo"], people["alice"])
    old = job_spec_build(job).model_dump(mode="json")
    del old["run_name"], old["run_tags"]
    with attempt_run(JobSpec.model_validate(old)) as run:
        pass
    assert tracked.get_run(run.run_id).info.run_name == f"job-{job.pk}-attempt-1"


def test_per_row_predictions_are_a_parquet_table_the_control_plane_reads_back(
    people, tracked: MlflowClient, tmp_path: Path, capsys
):
    job = job_make(people["demo"], people["alice"])
    rows = [
        PredictionRow(
            row=0, input="2+2=", prediction="The answer is 4", reference="4", score=1.0, extracted="4"
        ),
        PredictionRow(row=1, input="long " * 1000, prediction="5", reference="6", score=0.0),
    ]
    folder = tmp_path / "table"
    with attempt_run(job_spec_build(job)) as run:
        predictions_parquet(rows, folder / PREDICTIONS_FILE)
        uri = f"{run.log_artifacts(folder, PREDICTIONS_FOLDER)}/{PREDICTIONS_FILE}"
        # A retried attempt logs into the same run: the table is replaced, not doubled.
        run.log_artifacts(folder, PREDICTIONS_FOLDER)
    assert uri == f"runs:/{run.run_id}/tables/predictions.parquet"
    read = controlplane_tracking.table_read(uri)
    assert [r["row"] for r in read] == [0, 1]
    assert read[0] == {
        "row": 0,
        "input": "2+2=",
        "prediction": "The answer is 4",
        "extracted": "4",
        "reference": "4",
        "score": 1.0,
    }
    assert read[1]["extracted"] is None
    assert len(read[1]["input"]) <= 2001  # long texts are cut


def test_json_tables_logged_before_parquet_are_still_read(
    people, tracked: MlflowClient, tmp_path: Path, capsys
):
    job = job_make(people["demo"], people["alice"])
    table = {
        "columns": ["row", "input", "prediction", "reference", "score"],
        "data": [[0, "2+2=", "4", "4", 1.0]],
    }
    with attempt_run(job_spec_build(job)) as run:
        uri = run.log_table(table, "predictions.json", tmp_path)
    assert controlplane_tracking.table_read(uri) == [
        {"row": 0, "input": "2+2=", "prediction": "4", "reference": "4", "score": 1.0}
    ]


def test_a_table_that_is_neither_parquet_nor_json_is_refused(
    people, tracked: MlflowClient, tmp_path: Path, capsys
):
    job = job_make(people["demo"], people["alice"])
    folder = tmp_path / "table"
    folder.mkdir()
    (folder / PREDICTIONS_FILE).write_bytes(b"PAR1 not really parquet")
    (folder / "notes.txt").write_text("plain text")
    with attempt_run(job_spec_build(job)) as run:
        base = run.log_artifacts(folder, PREDICTIONS_FOLDER)
    with pytest.raises(ValueError, match="not readable Parquet"):
        controlplane_tracking.table_read(f"{base}/{PREDICTIONS_FILE}")
    with pytest.raises(ValueError, match="neither Parquet nor JSON"):
        controlplane_tracking.table_read(f"{base}/notes.txt")


def test_the_control_plane_reads_tables_from_runs_only():
    with pytest.raises(ValueError, match="runs:/"):
        controlplane_tracking.table_read("/etc/passwd")


def test_evaluate_keeps_each_generated_answer_with_its_score(monkeypatch):
    from workers.engine.evaluation import suite
    from workers.spec import EvaluationConfig

    monkeypatch.setattr(suite, "generate", lambda model, tokenizer, prompts, **kw: [" Paris", "Rome "])
    data = suite.EvaluationData(
        generation=[
            suite.GenerationExample("Capital of France?", ("Paris",)),
            suite.GenerationExample("Capital of Spain?", ("Madrid", "madrid")),
        ]
    )
    rows: list[PredictionRow] = []
    config = EvaluationConfig(metrics=["exact_match"])
    metrics = suite.evaluate(None, None, config, data, predictions_out=rows)
    assert metrics["exact_match"] == 0.5
    assert rows == [
        PredictionRow(0, "Capital of France?", " Paris", "Paris", 1.0),
        PredictionRow(1, "Capital of Spain?", "Rome ", "Madrid | madrid", 0.0),
    ]


def test_multiple_choice_keeps_each_chosen_answer(monkeypatch):
    from workers.engine.evaluation import multiple_choice, suite
    from workers.spec import EvaluationConfig

    # The model's log-likelihood of each choice: it prefers "4" then "blue".
    monkeypatch.setattr(
        multiple_choice,
        "choice_loglikelihoods",
        lambda model, tok, contexts, examples, **kw: [[-3, -1], [-1, -2]],
    )
    examples = [
        multiple_choice.MultipleChoiceExample("2+2?", ("5", "4"), 1),
        multiple_choice.MultipleChoiceExample("Sky?", ("blue", "green"), 1),
    ]
    rows: list[PredictionRow] = []
    config = EvaluationConfig(metrics=["multiple_choice"])
    metrics = suite.evaluate(
        None, None, config, suite.EvaluationData(multiple_choice=examples), predictions_out=rows
    )
    assert metrics["mc_acc"] == 0.5
    assert [(r.prediction, r.reference, r.score) for r in rows] == [("4", "4", 1.0), ("blue", "green", 0.0)]
