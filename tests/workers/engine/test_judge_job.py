"""A judge job, run for real by the engine subprocess on the tiny model, as a worker runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from tests.workers.engine.runs import EngineRun, empty_store, engine_finish, engine_start
from workers.engine.protocol import EXIT_INVALID_INPUT, EXIT_OK

PAIRS = [
    {"row": 0, "prompt": "Say hello.", "answer_a": "Hello! How can I help you today?", "answer_b": "No."},
    {"row": 3, "prompt": "Add two and three.", "answer_a": "Five.", "answer_b": "Two plus three is six."},
    {"row": 4, "prompt": "Name a primary colour.", "answer_a": "Red.", "answer_b": "Red."},
]


def _judge_spec(job_id: int, model: Path, **judge: object) -> dict[str, object]:
    return {
        "job_id": job_id,
        "attempt": 1,
        "kind": "evaluate",
        "project": "demo",
        "base_model_uri": str(model),
        "mlflow_experiment": "tests/judge",
        "config": {},
        "judge": {"rubric": "Prefer the answer that is right.", "batch_size": 4} | judge,
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, EngineRun]:
    base = tmp_path_factory.mktemp("judge")
    store = empty_store(base / "empty-mlflow.db")
    lines = [json.dumps(pair) for pair in PAIRS]
    specs = {
        "judged": (_judge_spec(1, tiny_model_dir), lines),
        "bad_line": (_judge_spec(2, tiny_model_dir), [lines[0], '{"row": 1, "prompt": "Q"}']),
    }
    started = {name: engine_start(base / name, spec, rows, store) for name, (spec, rows) in specs.items()}
    return {name: engine_finish(process, base / name) for name, process in started.items()}


def test_a_judge_job_reports_its_metrics_and_each_pairs_verdict(runs):
    run = runs["judged"]
    assert run.returncode == EXIT_OK, run.stderr[-3000:]
    (result,) = run.events("result")
    metrics = result["metrics"]
    assert set(metrics) == {"judge_win_rate", "judge_tie_rate", "judge_consistency"}
    assert all(0 <= value <= 1 for value in metrics.values())
    (started,) = run.events("run")

    client = MlflowClient(run.tracking_uri)
    mlflow_run = client.get_run(started["mlflow_run_id"])
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.tags["tuneyard.judge"] == "true"
    assert mlflow_run.data.params["judge.rubric"] == "Prefer the answer that is right."
    assert mlflow_run.data.metrics == metrics

    uri = result["artifacts"]["predictions"]
    assert uri.startswith(f"runs:/{started['mlflow_run_id']}/") and uri.endswith(".parquet")
    local = client.download_artifacts(started["mlflow_run_id"], uri.split("/", 2)[2], str(run.workdir))
    table = pq.read_table(local).to_pylist()
    assert [(row["row"], row["input"], row["reference"]) for row in table] == [
        (pair["row"], pair["prompt"], "") for pair in PAIRS
    ]
    scores = {"challenger": 1.0, "tie": 0.5, "champion": 0.0}
    assert all(row["score"] == scores[row["prediction"]] for row in table)
    # Identical answers tie, whichever label the judge likes.
    assert table[2]["prediction"] == "tie"
    assert metrics["judge_win_rate"] == pytest.approx(sum(row["score"] for row in table) / len(table))


def test_a_bad_line_of_pairs_fails_the_job_with_its_line_number(runs):
    run = runs["bad_line"]

    assert run.returncode == EXIT_INVALID_INPUT
    assert run.stderr.strip().splitlines()[-1].startswith("error: line 2 of the pairs is not a pair")
