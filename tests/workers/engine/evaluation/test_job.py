"""An evaluate job, run for real by the engine subprocess on the tiny model.

Every metric the job reports must equal what an independent computation on the
same model gives: a loop over each question's choices for multiple-choice
accuracy (zero-shot and k-shot drawn from the questions themselves, as
lm-evaluation-harness draws them), and torch's own loss for the perplexity of
the base model with a LoRA adapter on top.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from mlflow import MlflowClient
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.workers.engine.evaluation.by_hand import accuracy_by_hand
from tests.workers.engine.runs import EngineRun, empty_store, engine_finish, engine_start
from workers.engine.data import DatasetError, MultipleChoiceRow, read_multiple_choice_rows
from workers.engine.evaluation.job import evaluated_model_load, multiple_choice_example
from workers.engine.evaluation.multiple_choice import MultipleChoiceExample, fewshot_contexts
from workers.engine.methods import BaseModelError
from workers.engine.protocol import EXIT_OK
from workers.spec import JobSpec, TrainedArtifactKind

# As the control plane's ingest stores a multiple-choice version: question, choices, answer's index.
QUESTIONS: list[dict[str, Any]] = [
    {"question": "What is the capital of France?", "choices": ["Paris", "London", "Rome"], "answer": 0},
    {"question": "How many legs has a cat?", "choices": ["two", "four", "a great many"], "answer": 1},
    {"question": "Two plus three is", "choices": ["five", "six"], "answer": 0},
    {"question": "Which is a fruit?", "choices": ["apple", "brick", "cloud"], "answer": 0},
    {"question": "Translate 'Thank you' to French.", "choices": ["Danke", "Merci"], "answer": 1},
    {"question": "Name a primary colour.", "choices": ["Red", "Green tea"], "answer": 0},
]
TEXTS = [
    {"text": "### Instruction:\nSay hello.\n\n### Response:\nHello! How can I help you today?"},
    {"text": "The quick brown fox jumps over the lazy dog."},
    {"text": "Two plus three is five."},
]


def _evaluate_spec(job_id: int, model: Path, evaluation: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "attempt": 1,
        "kind": "evaluate",
        "project": "demo",
        "base_model_uri": str(model),
        "mlflow_experiment": "tests/evaluate",
        "config": {},
        "evaluation": evaluation,
        **extra,
    }


def _lora_adapter(model_dir: Path, out: Path) -> Path:
    """A LoRA adapter whose weights are not the zero start, so it changes what the model predicts."""
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM", init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> dict[str, EngineRun]:
    base = tmp_path_factory.mktemp("evaluate")
    store = empty_store(base / "empty-mlflow.db")
    adapter = _lora_adapter(demo_model_dir, base / "trained-adapter")
    mc = {"metrics": ["multiple_choice"], "batch_size": 4}
    perplexity = {"metrics": ["perplexity"], "max_seq_length": 64}
    adapter_on = {"trained_artifact": {"kind": "adapter", "uri": str(adapter)}}
    specs = {
        "zero_shot": (_evaluate_spec(1, demo_model_dir, mc), QUESTIONS),
        "two_shot": (_evaluate_spec(2, demo_model_dir, mc | {"num_fewshot": 2, "seed": 7}), QUESTIONS),
        "adapter": (_evaluate_spec(3, demo_model_dir, perplexity, **adapter_on), TEXTS),
    }
    started = {name: engine_start(base / name, spec, rows, store) for name, (spec, rows) in specs.items()}
    return {name: engine_finish(process, base / name) for name, process in started.items()}


@pytest.fixture(scope="module")
def tiny(demo_model_dir: Path):
    model = AutoModelForCausalLM.from_pretrained(demo_model_dir, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(demo_model_dir)


def _examples() -> list[MultipleChoiceExample]:
    # Written out here rather than through the engine's reader: the prompt is part of what is checked.
    return [
        MultipleChoiceExample(f"Question: {row['question']}\nAnswer:", tuple(row["choices"]), row["answer"])
        for row in QUESTIONS
    ]


def _result(run: EngineRun) -> dict[str, float]:
    assert run.returncode == EXIT_OK, run.stderr[-3000:]
    (result,) = run.events("result")
    # Only the per-row answers, as a table in the run (none for perplexity, which answers nothing).
    assert set(result["artifacts"]) <= {"predictions"}
    return result["metrics"]


def test_zero_shot_accuracy_is_the_per_choice_loop_on_the_questions(runs, tiny):
    model, tokenizer = tiny
    examples = _examples()

    metrics = _result(runs["zero_shot"])

    assert metrics == accuracy_by_hand(model, tokenizer, [e.context for e in examples], examples)


def test_k_shot_examples_come_from_the_other_questions_as_lm_eval_draws_them(runs, tiny):
    model, tokenizer = tiny
    examples = _examples()
    # lm-evaluation-harness with the few-shot split the evaluated one: k + 1 drawn, the question
    # itself dropped, the first k kept; one generator for all questions in order.
    rng = random.Random(7)
    contexts = []
    for example in examples:
        shots = [shot for shot in rng.sample(examples, 3) if shot != example][:2]
        contexts.append("".join(f"{s.context} {s.choices[s.answer]}\n\n" for s in shots) + example.context)
    assert all(e.context not in c.rsplit("\n\n", 1)[0] for e, c in zip(examples, contexts, strict=True))

    metrics = _result(runs["two_shot"])

    assert contexts == fewshot_contexts(examples, examples, num_fewshot=2, seed=7, exclude_self=True)
    assert metrics == accuracy_by_hand(model, tokenizer, contexts, examples)


def _perplexity_by_hand(model, tokenizer) -> float:
    """Token-weighted mean loss over the texts, each with its end-of-sequence token, as training sees them."""
    total, count = 0.0, 0
    for row in TEXTS:
        ids = tokenizer(row["text"], truncation=True, max_length=63)["input_ids"] + [tokenizer.eos_token_id]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
        total += float(torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum"))
        count += len(ids) - 1
    return math.exp(total / count)


def test_an_adapter_is_evaluated_on_top_of_its_base_model(runs, tiny, demo_model_dir):
    model, tokenizer = tiny
    spec = json.loads((runs["adapter"].workdir.parent / "spec.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(demo_model_dir, dtype=torch.float32)
    with_adapter = PeftModel.from_pretrained(base, spec["trained_artifact"]["uri"]).eval()

    adapted = _result(runs["adapter"])

    assert adapted["perplexity"] == pytest.approx(_perplexity_by_hand(with_adapter, tokenizer), rel=1e-5)
    # The adapter changed the model: the job did not score the base model alone.
    plain = _perplexity_by_hand(model, tokenizer)
    assert not math.isclose(adapted["perplexity"], plain, rel_tol=1e-4)


def test_the_metrics_and_the_evaluation_go_to_the_jobs_mlflow_run(runs):
    run = runs["zero_shot"]
    (started,) = run.events("run")
    recorded = MlflowClient(tracking_uri=run.tracking_uri).get_run(started["mlflow_run_id"])

    assert recorded.info.status == "FINISHED"
    assert recorded.data.tags["tuneyard.kind"] == "evaluate"
    assert recorded.data.tags["tuneyard.job_id"] == "1"
    assert recorded.data.metrics == _result(run)
    assert recorded.data.params["metrics"] == "multiple_choice"
    assert recorded.data.params["num_fewshot"] == "0"


def test_an_adapter_stored_as_a_pickle_is_refused_unread(demo_model_dir, tmp_path):
    pickled = _lora_adapter(demo_model_dir, tmp_path / "adapter")
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")

    with pytest.raises(BaseModelError, match="has no adapter_model.safetensors"):
        evaluated_model_load(demo_model_dir, "tiny", pickled, TrainedArtifactKind.ADAPTER, "runs:/r/adapter")


def test_multiple_choice_on_rows_without_choices_fails_with_a_reason(tmp_path):
    pq.write_table(pa.Table.from_pylist(TEXTS), tmp_path / "texts.parquet")
    with pytest.raises(DatasetError, match="is not multiple-choice: it has the columns text"):
        read_multiple_choice_rows([tmp_path / "texts.parquet"])


def test_the_reader_gives_the_questions_choices_and_answers_in_order(tmp_path):
    pq.write_table(pa.Table.from_pylist(QUESTIONS), tmp_path / "mc.parquet")

    rows = read_multiple_choice_rows([tmp_path / "mc.parquet"])

    assert rows[1] == MultipleChoiceRow("How many legs has a cat?", ("two", "four", "a great many"), 1)
    assert [multiple_choice_example(row) for row in rows] == _examples()


def test_the_reader_refuses_an_answer_that_is_not_a_choice(tmp_path):
    pq.write_table(pa.Table.from_pylist([{**QUESTIONS[0], "answer": 3}]), tmp_path / "mc.parquet")
    with pytest.raises(DatasetError, match="row 1's answer 3 is not one of its choices"):
        read_multiple_choice_rows([tmp_path / "mc.parquet"])


def test_an_evaluate_spec_carries_its_evaluation_and_nothing_else_does():
    base = {"job_id": 1, "attempt": 1, "project": "p", "base_model_uri": "m", "dataset_uris": ["d"]}
    base |= {"config": {}, "mlflow_experiment": "e"}
    with pytest.raises(ValueError, match="carries 'evaluation'"):
        JobSpec.model_validate(base | {"kind": "evaluate"})
    with pytest.raises(ValueError, match="carries 'evaluation'"):
        JobSpec.model_validate(base | {"evaluation": {}})
    with pytest.raises(ValueError, match="only an evaluate job"):
        JobSpec.model_validate(base | {"trained_artifact": {"kind": "adapter", "uri": "runs:/x/adapter"}})
    assert JobSpec.model_validate(base | {"kind": "evaluate", "evaluation": {}}).evaluation is not None


def test_a_whole_trained_model_is_loaded_in_place_of_its_base(demo_model_dir, tiny):
    model, _ = tiny
    missing_base = Path("/nonexistent/base-model")

    _, loaded = evaluated_model_load(
        missing_base, "runs:/base/model", demo_model_dir, TrainedArtifactKind.MODEL, "runs:/r/model"
    )

    assert all(
        torch.equal(mine, theirs)
        for mine, theirs in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    )
    with pytest.raises(BaseModelError, match="cannot load base model 'runs:/base/model'"):
        evaluated_model_load(missing_base, "runs:/base/model", None, None)
