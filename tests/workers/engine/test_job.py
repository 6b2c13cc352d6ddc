"""The training subprocess, run for real on the tiny model.

The engine runs (LoRA, full, a bad dataset row, a bad spec) start together
in one module-scoped fixture: each spends most of its time importing torch,
transformers and MLflow, so running them side by side keeps the file fast.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.workers.engine.runs import (
    CHATS,
    PREFERENCES,
    ROOT,
    ROWS,
    EngineRun,
    empty_store,
    engine_finish,
    engine_start,
    spec_make,
)
from workers.engine.data import DatasetError, read_training_rows
from workers.engine.protocol import EXIT_INVALID_INPUT, EXIT_OK, PREFIX, emit, parse
from workers.spec import DatasetSchema
from workers.uris import UriScope

# The engine's test runs are project "demo"'s, in the experiment their specs name.
ENGINE_RUNS = UriScope(project="demo", experiment="tests/engine")


@pytest.fixture(scope="module")
def engine_runs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, EngineRun]:
    base = tmp_path_factory.mktemp("engine")
    model = tiny_model_dir  # the session's one tiny model
    store = empty_store(base / "empty-mlflow.db")
    good_rows = [json.dumps(row) for row in ROWS]
    bad_rows = good_rows[:2] + [json.dumps({"instruction": "Say hello."})] + good_rows[3:]
    lora, full = {"name": "lora"}, {"name": "full"}
    started = {
        "bad_spec": engine_start(base / "bad_spec", {"job_id": 0}, good_rows, store),
        "bad_row": engine_start(
            base / "bad_row", spec_make(3, model, lora, learning_rate=1e-2), bad_rows, store
        ),
    }
    lora_spec = spec_make(1, model, lora, learning_rate=1e-2)
    lora_spec["config"]["hyperparameters"]["checkpoint_every_steps"] = 10
    lora_spec["config"]["export"] = {"merge_adapter": True}
    started["lora"] = engine_start(base / "lora", lora_spec, good_rows, store)
    started["full"] = engine_start(
        base / "full", spec_make(2, model, full, learning_rate=1e-3), good_rows, store
    )
    chat_spec = spec_make(4, model, {"name": "p_tuning", "num_virtual_tokens": 4}, learning_rate=1e-2)
    chat_spec["config"]["hyperparameters"]["max_steps"] = 6
    started["chat"] = engine_start(base / "chat", chat_spec, CHATS, store)
    dpo_spec = spec_make(5, model, lora, learning_rate=5e-3)
    dpo_spec["config"]["objective"] = {"name": "dpo", "beta": 0.1}
    dpo_spec["config"]["hyperparameters"]["max_steps"] = 6
    started["dpo"] = engine_start(base / "dpo", dpo_spec, PREFERENCES, store)
    runs = {name: engine_finish(process, base / name) for name, process in started.items()}
    # The same job again, resumed from the LoRA run's checkpoint at step 20 (the
    # Trainer keeps the newest checkpoint on disk; the artifact store has them all).
    resumed = {
        **lora_spec,
        "attempt": 2,
        "resume_checkpoint_uri": str(base / "lora/work/trainer/checkpoint-20"),
    }
    runs["lora_resumed"] = engine_finish(
        engine_start(base / "lora_resumed", resumed, good_rows, store), base / "lora_resumed"
    )
    return runs


# --- the protocol ---------------------------------------------------------------


def test_protocol_event_round_trips_and_log_text_is_not_an_event() -> None:
    stream = io.StringIO()
    emit({"event": "progress", "step": 1, "total_steps": 2, "metrics": {"loss": 1.5}}, stream)

    line = stream.getvalue()
    assert line.startswith(PREFIX) and line.endswith("\n") and line.count("\n") == 1
    assert parse(line) == {
        "event": "progress",
        "step": 1,
        "total_steps": 2,
        "metrics": {"loss": 1.5},
    }
    assert parse("{'loss': 1.5}") is None
    assert parse(PREFIX + "not json") is None
    assert parse(PREFIX + '["no", "event"]') is None


def test_protocol_and_tracking_import_without_torch() -> None:
    code = "import sys, workers.engine.protocol, workers.tracking;sys.exit('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


# --- LoRA -------------------------------------------------------------------------


def test_lora_run_emits_run_then_progress_then_result(engine_runs: dict[str, EngineRun]) -> None:
    run = engine_runs["lora"]
    assert run.returncode == EXIT_OK, run.stderr[-3000:]

    kinds = [event["event"] for event in run.events()]
    assert kinds == ["run"] + (["progress"] * 10 + ["checkpoint"]) * 2 + ["progress"] * 10 + ["result"]
    progress = run.events("progress")
    assert [event["step"] for event in progress] == list(range(1, 31))
    assert {event["total_steps"] for event in progress} == {30}
    assert all({"loss", "learning_rate"} <= event["metrics"].keys() for event in progress)
    result = run.events("result")[0]
    assert result["metrics"]["train_loss"] > 0
    run_id = run.events("run")[0]["mlflow_run_id"]
    assert result["artifacts"] == {"adapter": f"runs:/{run_id}/adapter", "model": f"runs:/{run_id}/model"}


def test_lora_loss_decreases_on_a_repetitive_dataset(engine_runs: dict[str, EngineRun]) -> None:
    losses = engine_runs["lora"].losses()

    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1


def test_lora_run_is_recorded_in_mlflow_with_the_adapter(
    engine_runs: dict[str, EngineRun], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = engine_runs["lora"]
    run_id = run.events("run")[0]["mlflow_run_id"]
    client = MlflowClient(tracking_uri=run.tracking_uri)

    recorded = client.get_run(run_id)
    assert recorded.info.status == "FINISHED"
    assert recorded.info.run_name == "job-1-attempt-1"
    assert client.get_experiment(recorded.info.experiment_id).name == "tests/engine"
    assert {
        key: recorded.data.tags[key] for key in ("tuneyard.job_id", "tuneyard.attempt", "tuneyard.project")
    } == {
        "tuneyard.job_id": "1",
        "tuneyard.attempt": "1",
        "tuneyard.project": "demo",
    }
    assert recorded.data.params["method"] == "lora"
    assert recorded.data.params["lora.r"] == "8"
    assert recorded.data.params["max_steps"] == "30"
    assert len(client.get_metric_history(run_id, "loss")) == 30
    assert len(client.get_metric_history(run_id, "learning_rate")) == 30
    assert "train_loss" in recorded.data.metrics

    # The URI in the result is what another machine would download.
    from workers.tracking import download

    monkeypatch.setenv("MLFLOW_TRACKING_URI", run.tracking_uri)
    adapter = download(run.events("result")[0]["artifacts"]["adapter"], tmp_path, scope=ENGINE_RUNS)
    assert isinstance(adapter, Path)
    assert (adapter / "adapter_model.safetensors").is_file()
    config = json.loads((adapter / "adapter_config.json").read_text())
    # Names the spec's base model, not the worker's download directory.
    spec = json.loads((run.workdir.parent / "spec.json").read_text())
    assert config["base_model_name_or_path"] == spec["base_model_uri"]


def test_a_checkpoint_is_announced_only_once_stored_in_the_artifact_store(
    engine_runs: dict[str, EngineRun],
) -> None:
    run = engine_runs["lora"]
    checkpoints = run.events("checkpoint")
    assert [event["step"] for event in checkpoints] == [10, 20]
    (run_id,) = {event["mlflow_run_id"] for event in run.events("run")}
    assert [event["uri"] for event in checkpoints] == [
        f"runs:/{run_id}/checkpoints/step-10",
        f"runs:/{run_id}/checkpoints/step-20",
    ]
    stored = MlflowClient(tracking_uri=run.tracking_uri).list_artifacts(run_id, "checkpoints/step-20")
    names = {Path(entry.path).name for entry in stored}
    # Weights, optimizer, scheduler, RNG states and the data position: all a resume needs.
    assert {"adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"} <= names
    assert "trainer_state.json" in names


def test_a_resumed_run_continues_the_same_loss_curve_step_for_step(engine_runs: dict[str, EngineRun]) -> None:
    whole, resumed = engine_runs["lora"], engine_runs["lora_resumed"]
    assert resumed.returncode == EXIT_OK, resumed.stderr[-3000:]
    assert "resuming from the checkpoint at step 20" in resumed.stdout
    steps = [event["step"] for event in resumed.events("progress")]
    assert steps == list(range(21, 31))
    # On the CPU the continuation is exact: same weights, optimizer state, RNG and data order.
    assert resumed.losses() == pytest.approx(whole.losses()[20:], abs=1e-6)


def test_resuming_from_a_missing_checkpoint_fails_instead_of_starting_over(tmp_path: Path) -> None:
    spec = {
        "job_id": 9,
        "attempt": 2,
        "project": "demo",
        "base_model_uri": str(tmp_path / "no-model"),
        "mlflow_experiment": "tests/engine",
        "config": {},
        "resume_checkpoint_uri": str(tmp_path / "no-such-checkpoint"),
    }
    store = empty_store(tmp_path / "empty-mlflow.db")
    run = engine_finish(engine_start(tmp_path / "run", spec, [json.dumps(ROWS[0])], store), tmp_path / "run")
    assert run.returncode == EXIT_INVALID_INPUT
    assert "is not a readable checkpoint directory" in run.stderr.splitlines()[-1]


@pytest.mark.parametrize(
    ("field", "uri", "rule"),
    [
        ("base_model_uri", "/etc", "under-root"),
        ("base_model_uri", "file:///etc/ssl", "under-root"),
        ("base_model_uri", "http://169.254.169.254/model", "known-form"),
        ("resume_checkpoint_uri", "runs:/0123456789abcdef0123456789abcdef/checkpoints/step-1", "project-run"),
    ],
)
def test_a_job_naming_a_uri_the_rule_refuses_fails_without_reading_it(
    tmp_path: Path, field: str, uri: str, rule: str
) -> None:
    # Whatever the control plane let through (a row stored before the rule), the worker checks again.
    spec = spec_make(11, tmp_path / "model", {"name": "lora"}, learning_rate=1e-3) | {field: uri}
    store = empty_store(tmp_path / "empty-mlflow.db")

    run = engine_finish(engine_start(tmp_path / "run", spec, [json.dumps(ROWS[0])], store), tmp_path / "run")

    assert run.returncode == EXIT_INVALID_INPUT, run.stderr[-2000:]
    assert f"breaks the rule '{rule}'" in run.stderr.splitlines()[-1]
    assert not (run.workdir / "inputs" / "base-model").exists()


# --- full fine-tuning ----------------------------------------------------------------


def test_full_run_trains_every_weight_and_logs_the_model(engine_runs: dict[str, EngineRun]) -> None:
    run = engine_runs["full"]
    assert run.returncode == EXIT_OK, run.stderr[-3000:]

    losses = run.losses()
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1
    result = run.events("result")[0]
    run_id = run.events("run")[0]["mlflow_run_id"]
    assert result["artifacts"] == {"model": f"runs:/{run_id}/model"}
    client = MlflowClient(tracking_uri=run.tracking_uri)
    names = {Path(item.path).name for item in client.list_artifacts(run_id, "model")}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= names
    assert client.get_run(run_id).data.params["method"] == "full"


def test_an_adapter_merged_for_export_is_logged_as_a_whole_model_with_the_adapters_logits(
    engine_runs: dict[str, EngineRun], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from workers.tracking import download

    run = engine_runs["lora"]  # exported with merge_adapter
    assert run.returncode == EXIT_OK, run.stderr[-3000:]
    run_id = run.events("run")[0]["mlflow_run_id"]
    artifacts = run.events("result")[0]["artifacts"]
    assert artifacts == {"adapter": f"runs:/{run_id}/adapter", "model": f"runs:/{run_id}/model"}

    monkeypatch.setenv("MLFLOW_TRACKING_URI", run.tracking_uri)
    merged = download(artifacts["model"], tmp_path / "merged", scope=ENGINE_RUNS)
    adapter = download(artifacts["adapter"], tmp_path / "adapter", scope=ENGINE_RUNS)
    assert isinstance(merged, Path) and isinstance(adapter, Path)
    assert (merged / "model.safetensors").is_file() and not (merged / "adapter_config.json").exists()
    base_dir = Path(json.loads((run.workdir.parent / "spec.json").read_text())["base_model_uri"])
    inputs = torch.tensor([[1, 20, 30, 40, 50, 60, 70]])
    with torch.no_grad():
        expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter)(
            input_ids=inputs
        ).logits
        got = AutoModelForCausalLM.from_pretrained(merged)(input_ids=inputs).logits
    assert torch.allclose(got, expected, atol=1e-4)


# --- other methods and objectives, through the whole job -----------------------------


def test_a_chat_dataset_trains_with_p_tuning_and_logs_the_method(engine_runs: dict[str, EngineRun]) -> None:
    run = engine_runs["chat"]
    assert run.returncode == EXIT_OK, run.stderr[-3000:]

    assert len(run.losses()) == 6
    run_id = run.events("run")[0]["mlflow_run_id"]
    assert run.events("result")[0]["artifacts"] == {"adapter": f"runs:/{run_id}/adapter"}
    params = MlflowClient(tracking_uri=run.tracking_uri).get_run(run_id).data.params
    assert (params["method"], params["p_tuning.num_virtual_tokens"], params["objective"]) == (
        "p_tuning",
        "4",
        "sft",
    )


def test_a_dpo_job_reports_reward_margins(engine_runs: dict[str, EngineRun]) -> None:
    run = engine_runs["dpo"]
    assert run.returncode == EXIT_OK, run.stderr[-3000:]

    progress = run.events("progress")
    assert [event["step"] for event in progress] == list(range(1, 7))
    assert all("rewards/margins" in event["metrics"] for event in progress)
    params = (
        MlflowClient(tracking_uri=run.tracking_uri).get_run(run.events("run")[0]["mlflow_run_id"]).data.params
    )
    assert (params["objective"], params["dpo.beta"], params["dpo.loss_type"]) == ("dpo", "0.1", "sigmoid")


def test_a_dpo_job_on_instruction_rows_fails_before_loading_the_model(tmp_path: Path) -> None:
    spec = spec_make(6, tmp_path / "no-model", {"name": "lora"}, learning_rate=1e-3)
    spec["config"]["objective"] = {"name": "dpo"}
    store = empty_store(tmp_path / "empty-mlflow.db")
    run = engine_finish(engine_start(tmp_path / "run", spec, [json.dumps(ROWS[0])], store), tmp_path / "run")
    assert run.returncode == EXIT_INVALID_INPUT
    assert run.stderr.rstrip("\n").splitlines()[-1] == (
        "error: DPO needs a preference dataset (prompt, chosen, rejected); row 1 is not one"
    )


# --- failures -----------------------------------------------------------------------


def test_bad_dataset_row_fails_with_one_sentence_on_the_last_stderr_line(
    engine_runs: dict[str, EngineRun],
) -> None:
    run = engine_runs["bad_row"]

    assert run.returncode == EXIT_INVALID_INPUT
    assert run.stderr.rstrip("\n").splitlines()[-1] == "error: dataset row 3 has no 'output' (train.jsonl)"
    assert not run.events("result")
    run_id = run.events("run")[0]["mlflow_run_id"]
    assert MlflowClient(tracking_uri=run.tracking_uri).get_run(run_id).info.status == "FAILED"


@pytest.mark.parametrize(
    ("line", "sentence"),
    [
        ('{"instruction": "Hi"}', "dataset row 2 has no 'output' (rows.jsonl)"),
        (
            '{"instruction": "Hi", "output": 3}',
            "dataset row 2 has a non-string 'output' (rows.jsonl)",
        ),
        ('{"instruction": "Hi", "output": ""}', "dataset row 2 has an empty 'output' (rows.jsonl)"),
        (
            '{"instruction": "Hi", "output": "Yo", "id": 7}',
            "dataset row 2 has an unknown field 'id' (rows.jsonl)",
        ),
        ('["Hi", "Yo"]', "dataset row 2 is not a JSON object (rows.jsonl)"),
    ],
)
def test_bad_row_is_named_by_its_line_number(tmp_path: Path, line: str, sentence: str) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps(ROWS[0]) + "\n" + line + "\n")

    with pytest.raises(DatasetError) as raised:
        read_training_rows([rows], DatasetSchema.INSTRUCTION)
    assert str(raised.value) == sentence


def test_invalid_spec_fails_before_any_mlflow_run(engine_runs: dict[str, EngineRun]) -> None:
    run = engine_runs["bad_spec"]

    assert run.returncode == EXIT_INVALID_INPUT
    last = run.stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith("error: the job spec is invalid: job_id: ")
    assert not run.events()
    assert not MlflowClient(tracking_uri=run.tracking_uri).search_runs(experiment_ids=["0"])
