"""Generative tasks in an evaluate job, run for real by the engine subprocess on the tiny model: the
answer read out of each generation, scored, and kept row by row as a Parquet table in the run."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import mlflow.artifacts
import pyarrow.parquet as pq
import pytest
import torch
from mlflow import MlflowClient
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.workers.engine.runs import EngineRun, empty_store, engine_finish, engine_start
from workers.engine.data import InstructionRow, instruction_prompt
from workers.engine.evaluation.generation import generate
from workers.engine.protocol import EXIT_OK

NEW_TOKENS = 8
SUMS = [(2, 3), (4, 4), (1, 6), (7, 2), (3, 3), (5, 1)]
QUESTIONS: list[dict[str, Any]] = [
    {"question": "What is the capital of France?", "choices": ["Paris", "Rome", "Oslo"], "answer": 0},
    {"question": "How many legs has a cat?", "choices": ["two", "four"], "answer": 1},
    {"question": "Which is a fruit?", "choices": ["brick", "cloud", "apple", "mat"], "answer": 2},
]


def _spec(job_id: int, model: Path, evaluation: dict[str, Any]) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "attempt": 1,
        "kind": "evaluate",
        "project": "demo",
        "base_model_uri": str(model),
        "mlflow_experiment": "tests/generative",
        "config": {},
        "evaluation": {"max_new_tokens": NEW_TOKENS, "batch_size": 4} | evaluation,
    }


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def own_answers(tiny) -> list[str]:
    """What the tiny model answers each sum, generated here: half the rows get it as their reference."""
    model, tokenizer = tiny
    prompts = [instruction_prompt(InstructionRow(instruction=_sum(a, b), output="-")) for a, b in SUMS]
    return generate(model, tokenizer, prompts, max_new_tokens=NEW_TOKENS, batch_size=1)


def _sum(a: int, b: int) -> str:
    return f"What is {a} plus {b}? End with 'the answer is' and the number."


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, own_answers) -> dict[str, EngineRun]:
    base = tmp_path_factory.mktemp("generative")
    store = empty_store(base / "empty-mlflow.db")
    # Even rows: the model's own answer (right, whole); odd rows: an answer it never gives.
    whole_rows = [
        {"instruction": _sum(a, b), "output": answer if number % 2 == 0 else "Nothing like it."}
        for number, ((a, b), answer) in enumerate(zip(SUMS, own_answers, strict=True))
    ]
    gsm8k_rows = [
        {"instruction": _sum(a, b), "output": f"{a} + {b} = {a + b}.\n#### {a + b}"} for a, b in SUMS
    ]
    specs = {
        "whole": (_spec(1, tiny_model_dir, {"metrics": ["answer_accuracy", "exact_match"]}), whole_rows),
        "gsm8k": (
            _spec(
                2,
                tiny_model_dir,
                {
                    "metrics": ["answer_accuracy"],
                    "answer": {"extraction": "last_number", "comparison": "numeric", "tolerance": 0.5},
                },
            ),
            gsm8k_rows,
        ),
        "letters": (
            _spec(
                3, tiny_model_dir, {"metrics": ["answer_accuracy"], "answer": {"extraction": "choice_letter"}}
            ),
            QUESTIONS,
        ),
    }
    started = {name: engine_start(base / name, spec, rows, store) for name, (spec, rows) in specs.items()}
    return {name: engine_finish(process, base / name) for name, process in started.items()}


def _result(run: EngineRun) -> dict[str, Any]:
    assert run.returncode == EXIT_OK, run.stderr[-3000:]
    (result,) = run.events("result")
    return result


def _predictions(run: EngineRun) -> list[dict[str, Any]]:
    uri = _result(run)["artifacts"]["predictions"]
    (started,) = run.events("run")
    assert uri == f"runs:/{started['mlflow_run_id']}/tables/predictions.parquet"
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=uri, dst_path=str(run.workdir.parent / "read"), tracking_uri=run.tracking_uri
    )
    table = pq.read_table(local)
    assert table.column_names == ["row", "input", "prediction", "extracted", "reference", "score"]
    return table.to_pylist()


def test_the_whole_answer_scores_the_rows_whose_reference_is_the_models_own_answer(runs, own_answers):
    metrics = _result(runs["whole"])["metrics"]
    rows = _predictions(runs["whole"])

    assert metrics == {"answer_accuracy": 0.5, "exact_match": 0.5}
    assert [row["prediction"] for row in rows] == own_answers  # the job generated what the model generates
    assert [row["extracted"] for row in rows] == own_answers
    assert [row["score"] for row in rows] == [1.0, 0.0] * 3
    assert rows[1]["reference"] == "Nothing like it."
    assert [row["row"] for row in rows] == list(range(len(SUMS)))


def test_gsm8k_style_answers_are_read_by_their_last_number_and_compared_as_numbers(runs):
    result = _result(runs["gsm8k"])
    rows = _predictions(runs["gsm8k"])

    expected_scores = []
    for row, (a, b) in zip(rows, SUMS, strict=True):
        assert row["reference"] == f"{a} + {b} = {a + b}.\n#### {a + b}"  # the reference kept whole
        numbers = re.findall(r"-?\d+(?:\.\d+)?", row["prediction"].replace(",", ""))
        extracted = numbers[-1] if numbers else None
        assert (row["extracted"] is None) == (extracted is None)
        if extracted is not None:
            assert Decimal(row["extracted"]) == Decimal(extracted)
        right = extracted is not None and abs(Decimal(extracted) - (a + b)) <= Decimal("0.5")
        expected_scores.append(float(right))
    assert [row["score"] for row in rows] == expected_scores
    assert result["metrics"] == {"answer_accuracy": pytest.approx(sum(expected_scores) / len(SUMS))}


def test_multiple_choice_questions_are_asked_by_letter_and_scored_by_the_letter_answered(runs):
    rows = _predictions(runs["letters"])

    assert rows[2]["input"] == "Question: Which is a fruit?\nA. brick\nB. cloud\nC. apple\nD. mat\nAnswer:"
    assert [row["reference"] for row in rows] == ["A", "B", "C"]
    for row in rows:
        letters = re.findall(r"(?<![A-Za-z0-9])([A-D])(?![A-Za-z0-9])", row["prediction"])
        if not letters:
            assert row["extracted"] is None and row["score"] == 0.0
        assert row["score"] == float(row["extracted"] == row["reference"])


def test_the_runs_params_say_how_answers_were_read_and_how_likelihoods_are_scored(runs):
    run = runs["gsm8k"]
    (started,) = run.events("run")

    params = MlflowClient(tracking_uri=run.tracking_uri).get_run(started["mlflow_run_id"]).data.params

    assert params["metrics"] == "answer_accuracy"
    assert params["answer.extraction"] == "last_number"
    assert params["answer.comparison"] == "numeric"
    assert params["answer.tolerance"] == "0.5"
    assert params["special_tokens"] == "tokenizer"
