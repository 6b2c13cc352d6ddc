"""Every training method, objective and option, trained for real on the tiny model on the CPU.

These call ``train`` in this process (no MLflow, no subprocess): the engine's
subprocess and its protocol are covered by test_engine.py, and one torch
import for the whole module keeps it fast on a small machine.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from transformers import TrainingArguments

from workers.engine import JobInputError
from workers.engine.data import ChatMessage, ChatRow, InstructionRow, PreferenceRow, TextRow
from workers.engine.methods import adapter_merge, model_load
from workers.engine.sft import IGNORE_INDEX, sft_examples
from workers.engine.train import EarlyStopping, TrainedModel, train, training_arguments
from workers.spec import JobSpec, QLoraMethod, TrainingConfig

ROOT = Path(__file__).resolve().parents[3]

# Repetitive on purpose: a tiny model can visibly learn it in a few steps.
INSTRUCTIONS = [
    InstructionRow(instruction="Say hello.", output="Hello! How can I help you today?"),
    InstructionRow(instruction="Name a primary colour.", output="Red is a primary colour."),
    InstructionRow(instruction="Translate to French.", input="Thank you", output="Merci."),
    InstructionRow(instruction="Add two and three.", output="Two plus three is five."),
] * 4

CHAT = ChatRow(
    (
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Say hello."),
        ChatMessage("assistant", "Hello!"),
        ChatMessage("user", "Add two and three."),
        ChatMessage("assistant", "Five."),
    )
)

PREFERENCES = [
    PreferenceRow(prompt="Say hello.", chosen="Hello! How can I help you today?", rejected="No."),
    PreferenceRow(prompt="Name a primary colour.", chosen="Red is a primary colour.", rejected="Dog."),
    PreferenceRow(prompt="Add two and three.", chosen="Two plus three is five.", rejected="Seven."),
    PreferenceRow(prompt="What is the capital of France?", chosen="Paris.", rejected="The sky."),
] * 2


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir: Path) -> Path:
    return tiny_model_dir  # the session's one tiny model


def _spec(model: Path, config: dict[str, Any]) -> JobSpec:
    hyperparameters = {"learning_rate": 1e-2, "max_steps": 8, "batch_size": 4, "seed": 0}
    return JobSpec.model_validate(
        {
            "job_id": 1,
            "attempt": 1,
            "project": "demo",
            "base_model_uri": str(model),
            "dataset_uris": ["unused"],
            "mlflow_experiment": "tests/methods",
            "config": {
                **config,
                "hyperparameters": hyperparameters | config.get("hyperparameters", {}),
            },
        }
    )


Steps = list[tuple[int, dict[str, float]]]


def _train(model: Path, workdir: Path, config: dict[str, Any], rows: list[Any]) -> tuple[TrainedModel, Steps]:
    steps: Steps = []
    trained = train(
        _spec(model, config),
        model,
        rows,
        workdir,
        lambda step, total, metrics: steps.append((step, dict(metrics))),
    )
    return trained, steps


def _losses(steps: Steps) -> list[float]:
    return [metrics["loss"] for _, metrics in steps if "loss" in metrics]


# --- the adapter methods ---------------------------------------------------------------

ADAPTER_METHODS = {
    "lora": {"name": "lora"},
    "prefix_tuning": {"name": "prefix_tuning", "num_virtual_tokens": 8},
    "prefix_tuning_projected": {"name": "prefix_tuning", "num_virtual_tokens": 8, "projection": True},
    "p_tuning": {"name": "p_tuning", "num_virtual_tokens": 8},
    "prompt_tuning": {"name": "prompt_tuning", "num_virtual_tokens": 8},
    "prompt_tuning_from_text": {
        "name": "prompt_tuning",
        "num_virtual_tokens": 4,
        "init_text": "Answer briefly.",
    },
    "ia3": {"name": "ia3"},
}


@pytest.fixture(scope="module")
def adapter_runs(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[TrainedModel, Steps]]:
    base = tmp_path_factory.mktemp("adapter-runs")
    return {
        name: _train(tiny_model, base / name, {"method": method}, INSTRUCTIONS)
        for name, method in ADAPTER_METHODS.items()
    }


@pytest.mark.parametrize("name", sorted(ADAPTER_METHODS))
def test_each_adapter_method_trains_and_saves_safetensors_only(adapter_runs, name: str) -> None:
    trained, steps = adapter_runs[name]
    losses = _losses(steps)

    assert trained.artifact_name == "adapter" and trained.steps == 8
    assert len(losses) == 8 and all(loss == loss and loss > 0 for loss in losses)  # no NaN
    # Learning rates differ in how fast methods move; every one of them moves down.
    assert min(losses[-3:]) < losses[0]
    files = {path.name for path in trained.path.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]


def test_a_saved_adapter_loads_back_onto_its_base_and_changes_the_output(
    adapter_runs, tiny_model: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    inputs = torch.tensor([[1, 20, 30, 40, 50]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    before = base(inputs).logits
    for name in ("prefix_tuning", "ia3"):
        trained, _ = adapter_runs[name]
        adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), trained.path)
        assert not torch.allclose(adapted(input_ids=inputs).logits, before), name


def test_full_fine_tuning_saves_a_whole_model_as_safetensors(tiny_model: Path, tmp_path: Path) -> None:
    trained, steps = _train(tiny_model, tmp_path, {"method": {"name": "full"}}, INSTRUCTIONS)

    assert trained.artifact_name == "model"
    files = {path.name for path in trained.path.iterdir()}
    assert "model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]


def test_no_code_path_trusts_remote_code_by_itself() -> None:
    # A base model is uploaded data: its repository's Python runs on a worker only
    # where the spec says a site admin allowed it (test_model_trust.py).
    for path in (ROOT / "workers").rglob("*.py"):
        text = path.read_text()
        assert not re.search(
            r"trust_remote_code\s*=\s*(?!False|trust_remote_code\b|spec\.trust_remote_code\b)", text
        ), path


# --- QLoRA: GPU only ---------------------------------------------------------------------


def test_qlora_without_gpus_is_refused_by_the_spec_with_a_clear_message() -> None:
    with pytest.raises(ValidationError) as info:
        TrainingConfig.model_validate({"method": {"name": "qlora"}})
    assert "QLoRA (4-bit bitsandbytes) needs a CUDA GPU: set resources.gpus to 1 or more" in str(info.value)

    config = TrainingConfig.model_validate({"method": {"name": "qlora", "r": 16}, "resources": {"gpus": 1}})
    assert isinstance(config.method, QLoraMethod) and config.method.r == 16


def test_qlora_on_a_host_without_cuda_fails_as_a_job_input_error(tiny_model: Path) -> None:
    with pytest.raises(JobInputError, match="QLoRA needs a CUDA GPU, and this worker has none"):
        model_load(tiny_model, "tiny", QLoraMethod())


def test_qlora_without_bitsandbytes_says_so(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    # CUDA cannot run here, so it is the one thing faked; bitsandbytes is genuinely absent.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a),
    )
    with pytest.raises(JobInputError, match="QLoRA needs the bitsandbytes package"):
        model_load(tiny_model, "tiny", QLoraMethod())


def test_qlora_loads_in_4bit_nf4_on_a_cuda_host(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from workers.engine.methods import _qlora_quantization

    # Only the host is faked (CUDA with bf16, bitsandbytes present); the config is the real one.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "bitsandbytes" else real_find_spec(name, *a),
    )
    config = _qlora_quantization(QLoraMethod(double_quant=False))
    assert (config.load_in_4bit, config.bnb_4bit_quant_type) == (True, "nf4")
    assert config.bnb_4bit_compute_dtype == torch.bfloat16 and not config.bnb_4bit_use_double_quant


# --- supervised fine-tuning: what the loss sees -------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def _learned_text(tokenizer, example: dict[str, list[int]]) -> str:
    return tokenizer.decode([label for label in example["labels"] if label != IGNORE_INDEX])


def test_instruction_prompt_tokens_are_masked_and_the_response_is_learned(tokenizer) -> None:
    (example,) = sft_examples(INSTRUCTIONS[:1], tokenizer, 256, completion_only_loss=True)

    ids, labels = example["input_ids"], example["labels"]
    assert len(ids) == len(labels) and ids[-1] == tokenizer.eos_token_id
    masked = [i for i, label in enumerate(labels) if label == IGNORE_INDEX]
    learned = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    # The prompt is one masked stretch at the start; then the response and eos are learned.
    assert masked == list(range(len(masked))) and learned == list(range(len(masked), len(ids)))
    assert tokenizer.decode(ids[: len(masked)], skip_special_tokens=True).endswith("### Response:\n")
    assert _learned_text(tokenizer, example) == "Hello! How can I help you today?</s>"


def test_a_response_cut_by_max_seq_length_does_not_learn_to_stop_there(tokenizer) -> None:
    row = InstructionRow(instruction="Count.", output=" ".join(["one two three four five"] * 20))
    (whole,) = sft_examples([row], tokenizer, 512, completion_only_loss=True)
    (cut,) = sft_examples([row], tokenizer, 40, completion_only_loss=True)
    (cut_all,) = sft_examples([row], tokenizer, 40, completion_only_loss=False)

    assert whole["labels"][-1] == tokenizer.eos_token_id
    assert len(cut["input_ids"]) == 40 and cut["input_ids"][-1] == tokenizer.eos_token_id
    assert cut["labels"][-1] == IGNORE_INDEX and cut["labels"][-2] != IGNORE_INDEX
    assert cut_all["labels"][:-1] == cut_all["input_ids"][:-1] and cut_all["labels"][-1] == IGNORE_INDEX


def test_a_conversation_the_chat_template_refuses_is_a_dataset_error(tokenizer) -> None:
    from workers.engine.data import DatasetError

    template = tokenizer.chat_template
    tokenizer.chat_template = "{{ raise_exception('roles must alternate') }}"
    try:
        with pytest.raises(DatasetError, match="chat template refuses a conversation: roles must alternate"):
            sft_examples([CHAT], tokenizer, 256, completion_only_loss=True)
    finally:
        tokenizer.chat_template = template


def test_chat_rows_use_the_models_chat_template_and_learn_only_assistant_turns(tokenizer) -> None:
    (example,) = sft_examples([CHAT], tokenizer, 256, completion_only_loss=True)

    text = tokenizer.decode(example["input_ids"])
    assert text.startswith("<s><|system|>\nBe brief.\n<|user|>\nSay hello.\n<|assistant|>\nHello!</s>")
    # Each turn as the template writes it, up to and including its eos (and Zephyr's newline).
    assert _learned_text(tokenizer, example) == "Hello!</s>\nFive.</s>\n"
    assert example["labels"][-1] != IGNORE_INDEX


def test_a_model_without_a_chat_template_gets_the_engines_fallback(tokenizer) -> None:
    template, tokenizer.chat_template = tokenizer.chat_template, None
    try:
        (example,) = sft_examples([CHAT], tokenizer, 256, completion_only_loss=True)
    finally:
        tokenizer.chat_template = template

    assert tokenizer.decode(example["input_ids"]).startswith("<s>### System:\nBe brief.\n\n### User:\n")
    assert _learned_text(tokenizer, example) == "Hello!</s>Five.</s>"


def test_with_completion_only_loss_off_every_token_is_learned(tokenizer) -> None:
    rows = [INSTRUCTIONS[0], CHAT, TextRow("The quick brown fox."), PREFERENCES[0]]
    for example in sft_examples(rows, tokenizer, 256, completion_only_loss=False):
        assert example["labels"] == example["input_ids"]
    # Plain text has no prompt: it is learned whole either way (the leading bos is never predicted).
    (text,) = sft_examples([TextRow("The quick brown fox.")], tokenizer, 256, completion_only_loss=True)
    assert text["labels"][1:] == text["input_ids"][1:]


def test_rows_whose_response_is_cut_off_are_left_out_and_none_left_is_an_error(tokenizer) -> None:
    long_prompt = InstructionRow(instruction="word " * 200, output="Yes.")
    examples = sft_examples([long_prompt, INSTRUCTIONS[0]], tokenizer, 32, completion_only_loss=True)
    assert len(examples) == 1
    with pytest.raises(JobInputError, match="no row has a response within max_seq_length"):
        sft_examples([long_prompt], tokenizer, 32, completion_only_loss=True)


def test_training_with_and_without_completion_only_loss(tiny_model: Path, tmp_path: Path) -> None:
    rows = [CHAT] * 8
    masked = _losses(_train(tiny_model, tmp_path / "masked", {}, rows)[1])
    every = _losses(
        _train(tiny_model, tmp_path / "every", {"hyperparameters": {"completion_only_loss": False}}, rows)[1]
    )
    assert len(masked) == len(every) == 8
    # The same model and data, averaged over different tokens: the first losses differ.
    assert masked[0] != pytest.approx(every[0], abs=1e-3)
    assert masked[-1] < masked[0] and every[-1] < every[0]


# --- DPO ------------------------------------------------------------------------------------


def test_dpo_with_lora_moves_the_reward_margin_up(tiny_model: Path, tmp_path: Path) -> None:
    config = {
        "method": {"name": "lora"},
        "objective": {"name": "dpo", "beta": 0.1},
        "hyperparameters": {"max_steps": 10, "learning_rate": 5e-3},
    }
    trained, steps = _train(tiny_model, tmp_path, config, PREFERENCES)

    assert trained.artifact_name == "adapter" and trained.steps == 10
    margins = [metrics["rewards/margins"] for _, metrics in steps if "rewards/margins" in metrics]
    losses = _losses(steps)
    assert len(margins) == 10
    # The first step's reference is the policy itself: margin 0 and loss log(2).
    assert margins[0] == pytest.approx(0.0, abs=1e-4) and losses[0] == pytest.approx(0.6931, abs=1e-3)
    assert sum(margins[-3:]) / 3 > 0.01
    assert sum(losses[-3:]) / 3 < losses[0]


def test_dpo_with_full_fine_tuning_uses_a_frozen_copy_as_reference(tiny_model: Path, tmp_path: Path) -> None:
    config = {
        "method": {"name": "full"},
        "objective": {"name": "dpo"},
        "hyperparameters": {"max_steps": 6, "learning_rate": 1e-3},
    }
    trained, steps = _train(tiny_model, tmp_path, config, PREFERENCES)

    assert trained.artifact_name == "model"
    margins = [metrics["rewards/margins"] for _, metrics in steps]
    assert margins[0] == pytest.approx(0.0, abs=1e-4) and margins[-1] > margins[0]


@pytest.mark.parametrize("loss_type", ["ipo", "hinge"])
def test_dpo_loss_types_train(tiny_model: Path, tmp_path: Path, loss_type: str) -> None:
    config = {"objective": {"name": "dpo", "loss_type": loss_type}, "hyperparameters": {"max_steps": 3}}
    trained, steps = _train(tiny_model, tmp_path, config, PREFERENCES)
    assert trained.steps == 3 and all(loss == loss for loss in _losses(steps))


def test_dpo_is_refused_for_prompt_learning_methods() -> None:
    with pytest.raises(
        ValidationError, match="DPO works with the methods lora, qlora, full, not prefix_tuning"
    ):
        TrainingConfig.model_validate({"method": {"name": "prefix_tuning"}, "objective": {"name": "dpo"}})


def test_dpo_on_rows_without_pairs_fails_clearly(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(JobInputError, match="DPO needs a preference dataset"):
        _train(tiny_model, tmp_path, {"objective": {"name": "dpo"}}, INSTRUCTIONS)


# --- merging a LoRA adapter for export --------------------------------------------------------


def test_a_merged_model_gives_the_adapter_models_logits(
    adapter_runs, tiny_model: Path, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    trained, _ = adapter_runs["lora"]
    merged_dir = adapter_merge(trained.path, tiny_model, tmp_path / "merged")

    assert (merged_dir / "model.safetensors").is_file()
    assert not [p for p in merged_dir.iterdir() if p.suffix in (".bin", ".pt")]
    inputs = torch.tensor([[1, 20, 30, 40, 50, 60, 70]])
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), trained.path).eval()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    with torch.no_grad():
        expected, got = adapted(input_ids=inputs).logits, merged(input_ids=inputs).logits
        assert not torch.allclose(
            base(input_ids=inputs).logits, expected, atol=1e-4
        )  # the adapter did something
    assert torch.allclose(got, expected, atol=1e-4)


def test_a_merged_model_is_saved_in_its_bases_dtype(adapter_runs, tiny_model: Path, tmp_path: Path) -> None:
    import json
    import shutil

    from safetensors import safe_open

    trained, _ = adapter_runs["lora"]
    half_base = shutil.copytree(tiny_model, tmp_path / "bf16-base")
    config = json.loads((half_base / "config.json").read_text())
    config["dtype"] = "bfloat16"
    (half_base / "config.json").write_text(json.dumps(config))

    merged_dir = adapter_merge(trained.path, half_base, tmp_path / "merged")

    with safe_open(merged_dir / "model.safetensors", "pt") as weights:
        dtypes = {weights.get_slice(name).get_dtype() for name in weights.keys()}
    assert dtypes == {"BF16"}


def test_a_prompt_learning_adapter_cannot_be_merged(adapter_runs, tiny_model: Path, tmp_path: Path) -> None:
    trained, _ = adapter_runs["prefix_tuning"]
    with pytest.raises(JobInputError, match="cannot be merged"):
        adapter_merge(trained.path, tiny_model, tmp_path / "merged")


# --- training options -------------------------------------------------------------------------


def test_the_defaults_keep_todays_training_arguments(tiny_model: Path, tmp_path: Path) -> None:
    args = training_arguments(_spec(tiny_model, {}), tmp_path)
    assert (args.gradient_accumulation_steps, args.activation_checkpointing) == (1, False)
    plain = TrainingArguments(output_dir=str(tmp_path / "plain"))
    assert (args.optim, args.lr_scheduler_type.value) == (plain.optim, "linear")
    assert (args.warmup_steps, args.weight_decay, args.max_grad_norm) == (0, 0.0, 1.0)
    assert (args.eval_strategy.value, args.bf16, args.fp16, args.auto_find_batch_size) == (
        "no",
        False,
        False,
        False,
    )


def test_every_training_option_reaches_the_training_arguments(tiny_model: Path, tmp_path: Path) -> None:
    hyperparameters = {
        "gradient_accumulation_steps": 4,
        "gradient_checkpointing": True,
        "optimizer": "adafactor",
        "scheduler": "cosine",
        "warmup_ratio": 0.1,
        "weight_decay": 0.01,
        "max_grad_norm": 0.5,
        "validation_fraction": 0.25,
        "eval_every_steps": 5,
        "mixed_precision": "bf16",
        "auto_find_batch_size": True,
    }
    args = training_arguments(_spec(tiny_model, {"hyperparameters": hyperparameters}), tmp_path)

    assert args.gradient_accumulation_steps == 4 and args.activation_checkpointing
    assert (args.optim.value, args.lr_scheduler_type.value) == ("adafactor", "cosine")
    assert args.warmup_steps == 0.1 and args.weight_decay == 0.01 and args.max_grad_norm == 0.5
    assert (args.eval_strategy.value, args.eval_steps) == ("steps", 5)
    assert args.bf16 and not args.fp16 and args.auto_find_batch_size
    sgd = training_arguments(
        _spec(
            tiny_model,
            {"hyperparameters": {"optimizer": "sgd", "scheduler": "polynomial", "warmup_steps": 3}},
        ),
        tmp_path,
    )
    assert (sgd.optim.value, sgd.lr_scheduler_type.value, sgd.warmup_steps) == ("sgd", "polynomial", 3)


@pytest.mark.parametrize(
    "hyperparameters, message",
    [
        (
            {"optimizer": "paged_adamw_8bit"},
            "the paged_adamw_8bit optimizer needs a CUDA GPU, and this worker",
        ),
        ({"mixed_precision": "fp16"}, "fp16 mixed precision needs a CUDA GPU, and this worker has none"),
    ],
)
def test_a_gpu_job_that_lands_on_a_cpu_host_fails_clearly(
    tiny_model: Path, tmp_path: Path, hyperparameters: dict[str, Any], message: str
) -> None:
    spec = _spec(tiny_model, {"hyperparameters": hyperparameters, "resources": {"gpus": 1}})
    with pytest.raises(JobInputError, match=message):
        training_arguments(spec, tmp_path)


def test_mixed_precision_auto_is_fp32_on_the_cpu(tiny_model: Path, tmp_path: Path) -> None:
    args = training_arguments(_spec(tiny_model, {"hyperparameters": {"mixed_precision": "auto"}}), tmp_path)
    assert not args.bf16 and not args.fp16


@pytest.mark.parametrize(
    "hyperparameters, message",
    [
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
        ({"optimizer": "lion_of_judah"}, "optimizer"),
        ({"scheduler": "sawtooth"}, "scheduler"),
        ({"warmup_ratio": 1.5}, "warmup_ratio"),
        ({"warmup_ratio": 0.1, "warmup_steps": 10}, "give warmup_steps or warmup_ratio, not both"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"eval_every_steps": 10}, "eval_every_steps evaluates held-out rows: set validation_fraction"),
        ({"early_stopping_patience": 2}, "early_stopping_patience needs evaluations"),
        ({"early_stopping_metric": "loss; drop"}, "early_stopping_metric"),
        ({"mixed_precision": "fp8"}, "mixed_precision"),
        ({"mixed_precision": "fp16"}, "fp16 mixed precision needs a CUDA GPU"),
        ({"optimizer": "paged_adamw_8bit"}, "the paged_adamw_8bit optimizer needs a CUDA GPU"),
        ({"completion_only_loss": "sometimes"}, "completion_only_loss"),
    ],
)
def test_bad_training_options_are_refused(hyperparameters: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        TrainingConfig.model_validate({"hyperparameters": hyperparameters})
    assert message in str(info.value)


def test_evaluation_on_a_held_out_split_is_reported_with_the_steps(tiny_model: Path, tmp_path: Path) -> None:
    hyperparameters = {"validation_fraction": 0.25, "eval_every_steps": 4, "gradient_accumulation_steps": 2}
    trained, steps = _train(tiny_model, tmp_path, {"hyperparameters": hyperparameters}, INSTRUCTIONS)

    assert trained.steps == 8
    evaluated = [step for step, metrics in steps if "eval_loss" in metrics]
    assert evaluated == [4, 8]


def test_the_options_shape_a_real_run(tiny_model: Path, tmp_path: Path) -> None:
    hyperparameters = {
        "max_steps": 6,
        "batch_size": 2,
        "gradient_accumulation_steps": 2,
        "gradient_checkpointing": True,
        "auto_find_batch_size": True,
        "scheduler": "cosine",
        "warmup_steps": 3,
        "weight_decay": 0.01,
        "optimizer": "adafactor",
    }
    trained, steps = _train(tiny_model, tmp_path, {"hyperparameters": hyperparameters}, INSTRUCTIONS)

    assert trained.steps == 6
    rates = [metrics["learning_rate"] for _, metrics in steps]
    # Warmup climbs from 0 over 3 steps to the peak, then the cosine decays.
    assert rates[0] == 0 and rates[3] == pytest.approx(1e-2)
    assert rates[0] < rates[1] < rates[2] < rates[3] > rates[4] > rates[5]
    assert all(loss == loss for loss in _losses(steps))


def test_early_stopping_stops_after_patience_evaluations_without_improvement() -> None:
    from transformers import TrainerControl, TrainerState

    stopper, control, state = EarlyStopping("eval_loss", 2, False), TrainerControl(), TrainerState()
    for loss in (3.0, 2.0, 2.5, 1.5, 1.6):
        stopper.on_evaluate(None, state, control, metrics={"eval_loss": loss})  # type: ignore[arg-type]
        assert not control.should_training_stop
    stopper.on_evaluate(None, state, control, metrics={"eval_loss": 1.7})  # type: ignore[arg-type]
    assert control.should_training_stop
    with pytest.raises(JobInputError, match="early stopping watches 'eval_accuracy'"):
        EarlyStopping("eval_accuracy", 1, True).on_evaluate(
            None,  # type: ignore[arg-type]
            state,
            control,
            metrics={"eval_loss": 1.0},
        )


def test_the_end_of_training_evaluates_the_held_out_rows(tiny_model: Path, tmp_path: Path) -> None:
    config = {
        "method": {"name": "lora"},
        "hyperparameters": {"max_steps": 3, "validation_fraction": 0.25},
        "evaluation": {"metrics": ["perplexity", "bleu", "rouge", "exact_match"], "max_new_tokens": 8},
    }
    trained, _ = _train(tiny_model, tmp_path, config, INSTRUCTIONS)
    metrics = trained.metrics
    assert {"eval_loss", "perplexity", "bleu", "rouge1", "rouge2", "rougeL", "exact_match"} <= set(metrics)
    assert metrics["perplexity"] > 1 and 0 <= metrics["exact_match"] <= 1 and 0 <= metrics["bleu"] <= 100


@pytest.mark.parametrize(
    "config, message",
    [
        ({"evaluation": {}}, "evaluation runs on held-out rows: set hyperparameters.validation_fraction"),
        (
            {"hyperparameters": {"validation_fraction": 0.2}, "evaluation": {"metrics": ["multiple_choice"]}},
            "multiple_choice is scored on multiple-choice data",
        ),
    ],
)
def test_an_evaluation_without_rows_to_score_is_refused(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TrainingConfig.model_validate(config)


def test_early_stoppings_count_comes_back_with_a_checkpoint() -> None:
    stopper = EarlyStopping("eval_loss", 3, False)
    stopper.best, stopper.evaluations_without_improvement = 1.25, 2
    restored = EarlyStopping.from_state(stopper.state())
    assert (restored.metric, restored.patience, restored.greater_is_better) == ("eval_loss", 3, False)
    assert (restored.best, restored.evaluations_without_improvement) == (1.25, 2)


def test_early_stopping_ends_a_real_run_early(tiny_model: Path, tmp_path: Path) -> None:
    # A learning rate of 1 throws the tiny model off at once: validation loss stops improving.
    hyperparameters = {
        "learning_rate": 1.0,
        "max_steps": 40,
        "validation_fraction": 0.25,
        "eval_every_steps": 1,
        "early_stopping_patience": 2,
        "optimizer": "sgd",
    }
    trained, _ = _train(
        tiny_model, tmp_path, {"method": {"name": "full"}, "hyperparameters": hyperparameters}, INSTRUCTIONS
    )
    assert trained.steps < 40
