"""The launch estimate: parameter counts match the real models exactly, memory and steps add up."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM

from workers.engine.estimate import GIB, EstimateError, training_estimate
from workers.spec import TrainingConfig

ROOT = Path(__file__).resolve().parents[3]

# Small configs of the other layouts the formulas cover: biases on q/k/v (Qwen2),
# tied embeddings and an explicit head_dim (Gemma), biases everywhere (Llama's options).
OTHER_CONFIGS: dict[str, dict[str, Any]] = {
    "qwen2": {"model_type": "qwen2", "vocab_size": 300, "hidden_size": 48, "intermediate_size": 96,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2},
    "gemma": {"model_type": "gemma", "vocab_size": 300, "hidden_size": 48, "intermediate_size": 80,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 16},
    "llama-biases": {"model_type": "llama", "vocab_size": 300, "hidden_size": 64, "intermediate_size": 96,
                     "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 4,
                     "attention_bias": True, "mlp_bias": True, "tie_word_embeddings": True},
}  # fmt: skip


def _config_json(path: Path) -> dict[str, Any]:
    return json.loads((path / "config.json").read_text())


def _estimate(config: dict[str, Any] | None, training: dict[str, Any], **kwargs: Any) -> Any:
    return training_estimate(
        config,
        TrainingConfig.model_validate(training),
        dataset_rows=kwargs.pop("dataset_rows", 100),
        tokens_per_row=kwargs.pop("tokens_per_row", 50.0),
        **kwargs,
    )


def _counts(model: Any) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    return total, sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    "targets",
    [
        None,  # peft's default for Llama: q_proj and v_proj
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        ["self_attn.o_proj", "lm_head"],
        ["model.layers.1.mlp.down_proj", "embed_tokens"],
    ],
)
def test_lora_trainable_params_equal_the_real_peft_models(tiny_model_dir: Path, targets: Any) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=targets, task_type=TaskType.CAUSAL_LM))
    method = {"name": "lora", "r": 4, **({"target_modules": targets} if targets else {})}

    estimate = _estimate(_config_json(tiny_model_dir), {"method": method})

    assert (estimate.total_params, estimate.trainable_params) == _counts(peft_model)


def test_full_fine_tuning_trains_every_parameter_of_the_tiny_model(tiny_model_dir: Path) -> None:
    total, _ = _counts(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    estimate = _estimate(_config_json(tiny_model_dir), {"method": {"name": "full"}})
    assert estimate.total_params == estimate.trainable_params == total


@pytest.mark.parametrize("name", sorted(OTHER_CONFIGS))
def test_total_params_equal_the_real_models_of_other_layouts(name: str) -> None:
    raw = OTHER_CONFIGS[name]
    config = AutoConfig.for_model(**raw)
    model = AutoModelForCausalLM.from_config(config)
    peft_model = get_peft_model(model, LoraConfig(r=2, task_type=TaskType.CAUSAL_LM))

    estimate = _estimate(config.to_dict(), {"method": {"name": "lora", "r": 2}})

    assert (estimate.total_params, estimate.trainable_params) == _counts(peft_model)
    assert not any("Llama-style" in note for note in estimate.notes)


def test_memory_is_weights_gradients_adam_state_and_activations(tiny_model_dir: Path) -> None:
    config = _config_json(tiny_model_dir)
    full = _estimate(config, {"method": {"name": "full"}, "resources": {"gpus": 1}})
    lora = _estimate(config, {"method": {"name": "lora"}, "resources": {"gpus": 1}})

    assert full.memory.weights == 4 * full.total_params
    assert full.memory.gradients == 4 * full.trainable_params
    assert full.memory.optimizer == 8 * full.trainable_params
    assert full.memory.overhead == GIB
    # A frozen base keeps no gradients or optimizer state: LoRA needs far less of both.
    full_training_state = full.memory.gradients + full.memory.optimizer
    assert lora.memory.gradients + lora.memory.optimizer < full_training_state / 10
    # Activations grow with the tokens in a batch.
    longer = _estimate(
        config,
        {"method": {"name": "full"}, "resources": {"gpus": 1}, "hyperparameters": {"max_seq_length": 512}},
    )
    assert longer.memory.activations == 2 * full.memory.activations


def test_fits_compares_one_devices_share_with_its_gpu(tiny_model_dir: Path) -> None:
    config = _config_json(tiny_model_dir)
    on_gpu = {"method": {"name": "full"}, "resources": {"gpus": 2}}

    assert _estimate(config, on_gpu, gpu_memory_bytes=80 * GIB).fits is True
    assert _estimate(config, on_gpu, gpu_memory_bytes=GIB // 2).fits is False
    assert _estimate(config, on_gpu).fits is None  # no GPU known
    assert _estimate(config, {"method": {"name": "full"}}, gpu_memory_bytes=80 * GIB).fits is None


def test_steps_and_tokens_follow_the_trainer(tiny_model_dir: Path) -> None:
    config = _config_json(tiny_model_dir)
    hyper = {"batch_size": 8, "epochs": 3, "max_seq_length": 64}

    by_epochs = _estimate(config, {"hyperparameters": hyper}, dataset_rows=100, tokens_per_row=30.0)
    assert by_epochs.steps == 3 * math.ceil(100 / 8)
    assert by_epochs.tokens_per_epoch == 100 * 31  # each row gains its end-of-sequence token
    assert by_epochs.tokens_total == 3 * 100 * 31

    two_gpus = _estimate(
        config, {"hyperparameters": hyper, "resources": {"gpus": 2}}, dataset_rows=100, tokens_per_row=30.0
    )
    assert two_gpus.steps == 3 * math.ceil(100 / 16)

    # Four batches to a step: 13 batches an epoch make 4 steps (the last one of a single batch).
    accumulated = _estimate(
        config,
        {"hyperparameters": {**hyper, "gradient_accumulation_steps": 4}},
        dataset_rows=100,
        tokens_per_row=30.0,
    )
    assert accumulated.steps == 3 * math.ceil(math.ceil(100 / 8) / 4)
    assert accumulated.tokens_total == 3 * 100 * 31

    capped = _estimate(
        config, {"hyperparameters": {**hyper, "max_steps": 5}}, dataset_rows=100, tokens_per_row=200.0
    )
    assert capped.steps == 5
    assert capped.tokens_total == 5 * 8 * 64  # rows are cut to max_seq_length


def test_without_a_config_only_tokens_and_steps_are_estimated() -> None:
    estimate = _estimate(None, {}, notes=["the base model is a hub id"])
    assert estimate.total_params is None and estimate.memory is None and estimate.fits is None
    assert estimate.steps == math.ceil(100 / 8)
    assert estimate.as_dict()["notes"] == ["the base model is a hub id"]


@pytest.mark.parametrize(
    ("config", "method", "message"),
    [
        ({"model_type": "llama"}, {"name": "full"}, "no usable 'hidden_size'"),
        ({**OTHER_CONFIGS["qwen2"], "num_hidden_layers": "2"}, {"name": "full"}, "num_hidden_layers"),
        ({**OTHER_CONFIGS["gemma"], "head_dim": "sixteen"}, {"name": "full"}, "head_dim"),
        (OTHER_CONFIGS["qwen2"], {"name": "lora", "target_modules": ["c_attn"]}, "c_attn"),
    ],
)
def test_a_config_it_cannot_read_is_an_error_with_a_reason(
    config: dict[str, Any], method: dict[str, Any], message: str
) -> None:
    with pytest.raises(EstimateError, match=message):
        _estimate(config, {"method": method})


def test_an_unknown_architecture_is_estimated_with_a_caveat() -> None:
    estimate = _estimate({**OTHER_CONFIGS["qwen2"], "model_type": "newfangled"}, {})
    assert any("'newfangled' is read as a Llama-style decoder" in note for note in estimate.notes)
    assert any("default LoRA targets" in note for note in estimate.notes)


def test_the_estimate_imports_without_torch() -> None:
    code = "import sys, workers.engine.estimate; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


@pytest.mark.parametrize(
    "method",
    [
        {"name": "prompt_tuning", "num_virtual_tokens": 7},
        {"name": "prefix_tuning", "num_virtual_tokens": 5},
        {"name": "prefix_tuning", "num_virtual_tokens": 5, "projection": True, "encoder_hidden_size": 16},
        {"name": "p_tuning", "num_virtual_tokens": 6, "encoder_hidden_size": 16},
        {"name": "ia3"},
    ],
)
def test_prompt_and_scaling_methods_trainable_params_equal_the_engines_peft_models(
    tiny_model_dir: Path, method: dict[str, Any]
) -> None:
    from workers.engine.methods import method_apply

    training = TrainingConfig.model_validate({"method": method})
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = method_apply(model, training.method, base_model=tiny_model_dir, gradient_checkpointing=False)

    estimate = _estimate(_config_json(tiny_model_dir), {"method": method})

    assert (estimate.total_params, estimate.trainable_params) == _counts(peft_model)


def test_sharding_strategies_split_what_they_shard_across_the_gpus(tiny_model_dir: Path) -> None:
    config = _config_json(tiny_model_dir)

    def memory(resources: dict[str, Any]) -> Any:
        return _estimate(config, {"method": {"name": "full"}, "resources": resources}).memory

    ddp = memory({"gpus": 4})
    fsdp = memory({"gpus": 4, "distributed": {"name": "fsdp"}})
    zero2 = memory({"gpus": 4, "distributed": {"name": "deepspeed", "stage": 2}})
    zero1_offload = memory({"gpus": 4, "distributed": {"name": "deepspeed", "stage": 1, "cpu_offload": True}})
    fsdp_offload = memory({"gpus": 4, "distributed": {"name": "fsdp", "cpu_offload": True}})

    # FSDP holds a quarter of everything, plus the one layer it gathers whole to compute.
    assert math.ceil(ddp.weights / 4) < fsdp.weights < ddp.weights
    assert (fsdp.gradients, fsdp.optimizer) == (math.ceil(ddp.gradients / 4), math.ceil(ddp.optimizer / 4))
    assert fsdp.activations == ddp.activations  # each GPU still computes its own batch
    assert (zero2.weights, zero2.gradients) == (ddp.weights, math.ceil(ddp.gradients / 4))
    assert (zero1_offload.gradients, zero1_offload.optimizer) == (ddp.gradients, 0)
    assert fsdp_offload.optimizer == fsdp_offload.gradients == 0
    assert fsdp_offload.weights == fsdp.weights - math.ceil(ddp.weights / 4)  # only the gathered layer
    assert any(
        "FSDP (full shard) over 4 processes" in note
        for note in _estimate(config, {"resources": {"gpus": 4, "distributed": {"name": "fsdp"}}}).notes
    )


def test_cpu_processes_share_each_step_like_gpus(tiny_model_dir: Path) -> None:
    hyper = {"batch_size": 8, "epochs": 1}
    two = _estimate(None, {"hyperparameters": hyper, "resources": {"cpu_processes": 2}}, dataset_rows=100)
    assert two.steps == math.ceil(100 / 16)
