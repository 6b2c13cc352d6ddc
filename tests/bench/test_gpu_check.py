"""The GPU check's dry run: every check on the CPU with the tiny model, so the script cannot rot
between the rare runs on a GPU host; and the arithmetic behind its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from bench.gpu_check import (
    LLAMA_LINEARS,
    BatchCounter,
    Timed,
    flops_per_token,
    mean_causal_context,
    peak_flops_for,
)
from workers.spec import FullMethod, LoraMethod
from workers.tinymodel import build_tiny_model

ROOT = Path(__file__).resolve().parents[2]

# What the CPU can run passes; what needs CUDA is skipped, saying why.
PASSING = {
    "environment", "gpu_discovery", "lora_engine", "lora_trainer", "full_engine", "packing_sdpa",
    "fsdp", "ddp", "evaluate", "memory_lora_engine", "memory_lora_trainer", "memory_full_engine",
    "memory_fsdp", "memory_ddp",
}  # fmt: skip
SKIPPED = {"full_compile", "full_liger", "packing_flash", "qlora"}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("gpu-check")
    result = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--dry-run", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    report = json.loads((out / "gpu_check.json").read_text())
    return {
        "rows": {row["check"]: row for row in report["rows"]},
        "table": (out / "gpu_check.md").read_text(),
        "finished": report["finished"],
    }


def test_the_dry_run_passes_every_check_the_cpu_can_run_and_skips_the_rest(dry_run: dict[str, Any]):
    statuses = {check: row["status"] for check, row in dry_run["rows"].items()}
    assert statuses == {check: "pass" for check in PASSING} | {check: "skip" for check in SKIPPED}
    assert dry_run["finished"]


def test_the_table_has_one_row_per_check(dry_run: dict[str, Any]):
    lines = [line for line in dry_run["table"].splitlines() if line.startswith("| ")]
    assert lines[0] == "| check | result | figure | goal |"
    assert len(lines) == 2 + len(PASSING) + len(SKIPPED)


def test_the_engine_packs_and_packing_gives_the_padded_loss(dry_run: dict[str, Any]):
    rows = dry_run["rows"]
    assert rows["lora_engine"]["details"]["batching"] == "packed in rows (sdpa)"
    packing = rows["packing_sdpa"]["details"]
    assert packing["fp32_rel_diff"] <= 1e-4
    # Fewer tokens than the padded batch: the point of packing.
    assert (
        packing["packed_shape"][0] * packing["packed_shape"][1]
        < packing["padded_shape"][0] * packing["padded_shape"][1]
    )


def test_the_engine_and_the_plain_trainer_train_on_the_same_rows_and_both_learn(dry_run: dict[str, Any]):
    rows = dry_run["rows"]
    for check in ("lora_engine", "lora_trainer", "full_engine"):
        details = rows[check]["details"]
        assert details["tokens_per_second"] > 0 and details["timed_steps"] >= 1
    # The Trainer pads: its batches hold more tokens than the rows give.
    assert rows["lora_trainer"]["details"]["padding_share"] > rows["lora_engine"]["details"]["padding_share"]
    assert rows["lora_trainer"]["details"]["engine_over_trainer"] > 0


def test_the_distributed_checks_train_in_a_real_process_group(dry_run: dict[str, Any]):
    fsdp, ddp = dry_run["rows"]["fsdp"]["details"]["group"], dry_run["rows"]["ddp"]["details"]["group"]
    assert fsdp == {"initialized": True, "backend": "gloo", "world_size": 2, "all_reduce_ok": True}
    assert ddp == {"initialized": True, "backend": "gloo", "world_size": 1, "all_reduce_ok": True}


def test_without_cuda_qlora_is_refused_as_a_worker_refuses_it(dry_run: dict[str, Any]):
    assert "QLoRA needs a CUDA GPU" in dry_run["rows"]["qlora"]["figure"]


def test_gpu_discovery_reads_idle_and_busy_through_the_workers_own_inventory(dry_run: dict[str, Any]):
    details = dry_run["rows"]["gpu_discovery"]["details"]
    assert details["inventory"][0]["name"] == "Dry-run GPU"
    assert details["idle_utilization"] == [[0], [0], [0]]
    assert details["busy_utilization"] == [[57], [57], [57]]


def test_the_evaluate_check_scores_the_lora_checks_adapter(dry_run: dict[str, Any]):
    details = dry_run["rows"]["evaluate"]["details"]
    assert "adapter" in dry_run["rows"]["evaluate"]["figure"]
    assert set(details["metrics"]) >= {"bleu", "rouge1", "exact_match"}


def test_the_memory_rows_scale_the_estimate_to_the_largest_batch_run(dry_run: dict[str, Any]):
    details = dry_run["rows"]["memory_full_engine"]["details"]
    assert 0 < details["peak_batch_tokens"] <= details["worst_batch_tokens"]
    assert details["estimate_at_run_bytes"] < details["estimate_bytes"]["total"]


def _linear_weights(model: torch.nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_flops_per_token_count_every_weight_matrix_of_the_real_model(tmp_path: Path):
    model_dir = build_tiny_model(tmp_path / "tiny")
    config = json.loads((model_dir / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    weights = _linear_weights(model)  # the output head is a Linear, the embedding is not
    assert flops_per_token(config, FullMethod(), context=0) == 6 * weights
    lora = LoraMethod(r=4, target_modules=LLAMA_LINEARS)
    adapted = get_peft_model(model, LoraConfig(r=4, target_modules=LLAMA_LINEARS, task_type="CAUSAL_LM"))
    adapters = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    assert flops_per_token(config, lora, context=0) == 4 * weights + 6 * adapters
    # Attention: 12 FLOPs per layer, query dimension and token of context.
    attention = flops_per_token(config, FullMethod(), context=10) - 6 * weights
    assert attention == 12 * config["num_hidden_layers"] * config["hidden_size"] * 10


def test_the_mean_causal_context_counts_each_token_and_those_before_it():
    assert mean_causal_context([1]) == 1
    assert mean_causal_context([3]) == 2  # (1 + 2 + 3) / 3
    assert mean_causal_context([1, 3]) == 7 / 4


def test_throughput_leaves_out_the_warm_up_steps_and_counts_each_steps_own_batch():
    timed = Timed(counter=BatchCounter(lambda features: {"input_ids": torch.zeros(len(features), 4)}))
    for tokens in (100, 10, 20, 30):
        timed.counter([{"input_ids": [0] * tokens}])
    timed.times = {1: 0.0, 2: 1.0, 3: 2.0, 4: 4.0}
    figures = timed.throughput(warmup=2)
    # Steps 3 and 4, i.e. the third and fourth batches, in the 3 s after step 2 ended.
    assert figures["real_tokens"] == 50 and figures["seconds"] == 3.0
    assert figures["tokens_per_second"] == pytest.approx(50 / 3)


def test_the_bf16_peak_is_known_for_the_cards_the_check_runs_on():
    assert peak_flops_for("NVIDIA H100 80GB HBM3") == pytest.approx(989.4e12)
    assert peak_flops_for("NVIDIA H200") == pytest.approx(989.4e12)
    assert peak_flops_for("NVIDIA H100 PCIe") == pytest.approx(756e12)
    assert peak_flops_for("Some Future GPU") is None
