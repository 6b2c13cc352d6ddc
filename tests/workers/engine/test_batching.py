"""Packing: examples share a row but never each other's attention, so the loss is the padded one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from workers.engine.batching import PackingCollator, batching_choose, packing_keeps_examples_apart
from workers.engine.data import InstructionRow, tokenize
from workers.engine.train import CausalLMCollator, train
from workers.spec import JobSpec

TEXTS = [
    "Say hello.",
    "### Instruction:\nSummarise the text.\n\n### Input:\nThe cat sat on the mat all day and did not move.",
    "Red is a primary colour.",
    "Please return the report by Friday so that we can review it together, and thank you.",
]


@pytest.fixture(scope="module")
def features(tiny_model_dir: Path) -> list[dict[str, list[int]]]:
    return tokenize(TEXTS, AutoTokenizer.from_pretrained(tiny_model_dir), max_seq_length=64)


def _model(path: Path, attention: str = "sdpa") -> PreTrainedModel:
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation=attention).eval()


def _loss(model: PreTrainedModel, batch: dict[str, Any]) -> float:
    with torch.no_grad():
        return float(model(**batch).loss)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_loss_is_the_mean_of_the_examples_losses_computed_apart(
    tiny_model_dir: Path, features: list[dict[str, list[int]]], attention: str
) -> None:
    model = _model(tiny_model_dir, attention)
    apart = []
    for feature in features:
        ids = torch.tensor([feature["input_ids"]])
        # Each example alone: the mean over its len - 1 predicted tokens.
        apart.append((_loss(model, {"input_ids": ids, "labels": ids}), len(feature["input_ids"]) - 1))
    # The loss of a batch is the mean over all its predicted tokens, so the
    # examples' losses are weighted by how many tokens each predicts.
    expected = sum(loss * n for loss, n in apart) / sum(n for _, n in apart)

    in_rows = _loss(model, PackingCollator()(features))
    in_one_row = _loss(model, PackingCollator(one_row=True)(features))

    assert len({n for _, n in apart}) > 1, "the examples must differ in length to test anything"
    assert in_rows == pytest.approx(expected, rel=1e-5)
    assert in_one_row == pytest.approx(expected, rel=1e-5)
    assert in_rows == pytest.approx(_loss(model, CausalLMCollator(pad_token_id=3)(features)), rel=1e-5)


def test_packed_batch_restarts_positions_and_never_predicts_across_a_boundary(
    features: list[dict[str, list[int]]],
) -> None:
    batch = PackingCollator(one_row=True)(features[:2])
    first, second = features[0]["input_ids"], features[1]["input_ids"]

    assert batch["input_ids"].tolist() == [first + second]
    assert batch["position_ids"].tolist() == [[*range(len(first)), *range(len(second))]]
    # The label at each example's first token is ignored: the previous example's last token predicts nothing.
    assert batch["labels"][0, 0] == -100 and batch["labels"][0, len(first)] == -100
    assert batch["use_cache"] is False


def test_rows_hold_at_most_the_longest_example_and_padding_is_a_segment_of_its_own() -> None:
    lengths = [9, 2, 3, 4, 6, 1]
    features = [{"input_ids": list(range(10, 10 + n))} for n in lengths]

    batch = PackingCollator()(features)

    # First fit, longest first, rows of 9 tokens: [9], [6, 3], [4, 2, 1] and two tokens of padding.
    assert batch["input_ids"].shape == (3, 9)
    assert batch["position_ids"].tolist() == [
        list(range(9)),
        [*range(6), *range(3)],
        [*range(4), *range(2), 0, 0, 1],
    ]
    assert batch["labels"][2, -2:].tolist() == [-100, -100]
    predicted = int((batch["labels"] != -100).sum())
    assert predicted == sum(n - 1 for n in lengths)  # every example's tokens but its first, nothing else


def test_a_model_that_keeps_packed_examples_apart_gets_packing_unless_it_is_off(tiny_model_dir: Path) -> None:
    model = _model(tiny_model_dir)
    padded = CausalLMCollator(pad_token_id=3)

    assert packing_keeps_examples_apart(model)
    assert isinstance(batching_choose(model, "auto", padded).collator, PackingCollator)
    off = batching_choose(model, "off", padded)
    assert off.collator is padded and off.sampling == "random"
    # The probe leaves the model in the mode it found it in.
    model.train()
    batching_choose(model, "auto", padded)
    assert model.training


def test_a_model_with_virtual_tokens_gets_padded_batches(tiny_model_dir: Path) -> None:
    from peft import PromptTuningConfig, TaskType, get_peft_model

    model = get_peft_model(
        _model(tiny_model_dir), PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4)
    )
    padded = CausalLMCollator(pad_token_id=3)
    chosen = batching_choose(model, "auto", padded)
    assert chosen.collator is padded and "virtual tokens" in chosen.description


def _opt_model_dir(tiny_model_dir: Path, out_dir: Path) -> Path:
    """An OPT model (whose attention ignores position_ids restarts) with the tiny model's tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = AutoConfig.for_model(
        "opt",
        vocab_size=len(tokenizer),
        hidden_size=32,
        word_embed_proj_dim=32,
        ffn_dim=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def test_a_model_that_would_mix_packed_examples_gets_length_grouped_padded_batches(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    opt_dir = _opt_model_dir(tiny_model_dir, tmp_path / "opt")
    padded = CausalLMCollator(pad_token_id=3)

    batching = batching_choose(AutoModelForCausalLM.from_pretrained(opt_dir), "auto", padded)

    assert batching.collator is padded and batching.sampling == "group_by_length"
    # And the engine trains with it.
    curve = _train(opt_dir, tmp_path / "run", "auto", steps=2)
    assert len(curve) == 2 and "length-grouped padded batches" in capsys.readouterr().out


def _train(model_dir: Path, workdir: Path, packing: str, *, steps: int) -> list[float]:
    rows = [InstructionRow(instruction=text, output=text[::-1]) for text in TEXTS] * 3
    spec = JobSpec.model_validate(
        {
            "job_id": 1,
            "attempt": 1,
            "project": "demo",
            "base_model_uri": str(model_dir),
            "dataset_uris": ["unused"],
            "mlflow_experiment": "unused",
            "config": {
                "method": {"name": "full"},
                "hyperparameters": {
                    "max_steps": steps,
                    "batch_size": 4,
                    "learning_rate": 1e-3,
                    "checkpoint_every_steps": None,
                    "packing": packing,
                },
            },
        }
    )
    curve: list[float] = []
    train(spec, model_dir, rows, workdir, lambda step, total, metrics: curve.append(metrics["loss"]))
    return curve


def test_training_with_packing_follows_the_padded_loss_curve(tiny_model_dir: Path, tmp_path: Path) -> None:
    padded = _train(tiny_model_dir, tmp_path / "off", "off", steps=6)
    packed = _train(tiny_model_dir, tmp_path / "auto", "auto", steps=6)

    assert len(packed) == 6
    # Same examples in the same batches, same tokens in the loss: only float rounding differs.
    assert packed == pytest.approx(padded, rel=1e-4)
