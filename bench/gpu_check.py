"""Every GPU path of the engine, checked in one prepared run: for the rare minutes a GPU host is lent.

Each check drives the code a worker runs (``workers.engine``: ``train``,
``batching``, ``methods``, ``estimate``, ``evaluation``; ``workers.gpus``)
with tracking off: ``train`` knows nothing of MLflow, and nothing here imports
``workers.tracking``. It prints one table, one row per check, each ``pass``,
``fail`` or ``skip`` with its figure, and writes it with every number behind
it under ``--out`` (``gpu_check.md``, ``gpu_check.json``).

    python -m bench.gpu_check --out DIR            on a CUDA host (infra/gpu_check.sh runs it there)
    python -m bench.gpu_check --dry-run --out DIR  the same checks on the CPU with the tiny model

The rows: the environment (versions, the card's bf16 peak and a measured
matmul ceiling); GPU discovery and the idle reading through the real
``nvidia-smi``; LoRA in bf16 on a ~1.1B Llama built from a config (tokens/s
and MFU); the plain ``transformers.Trainer`` with its padding collator on the
same rows (the engine / Trainer ratio); full fine-tuning in bf16 (MFU), and
the same with ``torch.compile`` or Liger's fused kernels (switched on here
only, by wrapping ``training_options``: no JobSpec option asks for them yet);
packing against padded batches (SDPA, and flash-attention's varlen kernels
where they are installed); QLoRA (bitsandbytes, 4-bit NF4); FSDP with CPU
offload and DDP over NCCL, each under torchrun; an evaluate job's generation;
and, for every training run, the memory estimate against
``torch.cuda.max_memory_allocated()``.

MFU is model FLOPs per real (non-padding) token times real tokens per second
over the card's dense bf16 peak: 6 FLOPs per weight per token for full
fine-tuning, 4 where the weights are frozen (no weight gradients), plus
attention's 12 per layer per query dimension per token of causal context.
Throughput leaves out the first ``warmup`` steps, and each step's real tokens
are counted as its batch is collated.

``--dry-run`` runs every check on the CPU with ``workers.tinymodel``'s model,
an ``nvidia-smi`` stand-in and DDP/FSDP over gloo (tests/bench runs it in CI),
so the script cannot rot between GPU runs; what needs CUDA is skipped, saying so.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SEED = 0
MIB = 1024**2
LLAMA_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
WORDS = (
    "the model learns to answer questions about data with care and precision while keeping each "
    "response short clear and useful for the person who asked it in the first place today"
).split()

# Dense bf16 tensor-core peaks from the vendors' datasheets (no sparsity), by a piece of the
# name torch gives the device; the first match wins. --peak-tflops overrides.
BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
)

# The goals the issue sets for the GPU figures.
MFU_GOAL = 0.45
ENGINE_TRAINER_GOAL = 1.5
ESTIMATE_GOAL = 0.15

FLASH_UNAVAILABLE = (
    "no flash-attention kernels here: flash-attn is source-only on PyPI (a CUDA build), "
    "FA4's CuTe runtime wheel is 88 MiB, over what may travel, and hub kernels need a network"
)


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"


@dataclass
class Row:
    """One line of the table; ``details`` keeps every number behind it for the JSON report."""

    check: str
    title: str
    status: Status
    figure: str = ""
    goal: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "status": self.status.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        return cls(**{**data, "status": Status(data["status"])})


@dataclass(frozen=True)
class Shape:
    """A Llama built from a config; the tiny model of ``workers.tinymodel`` when a scale has none."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    max_positions: int


@dataclass(frozen=True)
class Scale:
    """How big everything is: the ~1B model on a GPU, the tiny one in a dry run."""

    name: str
    shape: Shape | None
    rows: int
    short_words: tuple[int, int]
    long_words: tuple[int, int]
    long_share: float
    max_seq_length: int
    batch: int  # LoRA (engine and Trainer), QLoRA, DDP
    full_batch: int  # full fine-tuning
    steps: int
    full_steps: int
    distributed_batch: int
    distributed_steps: int
    warmup: int  # steps left out of every throughput
    eval_rows: int
    eval_batch: int
    max_new_tokens: int


GPU_SCALE = Scale(
    # TinyLlama-1.1B's shape: 1.10B parameters, grouped-query attention, a 32k vocabulary.
    name="Llama 1.1B (TinyLlama's shape, random init)",
    shape=Shape(
        hidden=2048, intermediate=5632, layers=22, heads=32, kv_heads=4, vocab=32000, max_positions=2048
    ),
    rows=1024,
    short_words=(8, 60),
    long_words=(200, 700),
    long_share=0.15,
    max_seq_length=1024,
    # Sized for an H100's 80 GB with room to spare: the padded Trainer's batches reach 8k
    # tokens, full fine-tuning's packed rows ~9k (activations in bf16, float32 master weights).
    batch=8,
    full_batch=32,
    steps=30,
    full_steps=20,
    distributed_batch=8,
    distributed_steps=6,
    warmup=5,
    eval_rows=64,
    eval_batch=16,
    max_new_tokens=32,
)
DRY_SCALE = Scale(
    name="workers.tinymodel (dry run on the CPU)",
    shape=None,
    rows=48,
    short_words=(3, 10),
    long_words=(30, 60),
    long_share=0.15,
    max_seq_length=128,
    batch=4,
    full_batch=8,
    steps=6,
    full_steps=4,
    distributed_batch=4,
    distributed_steps=3,
    warmup=2,
    eval_rows=8,
    eval_batch=4,
    max_new_tokens=8,
)


@dataclass
class Context:
    """What every check reads; ``results`` carries what a later check uses from an earlier one."""

    dry_run: bool
    scale: Scale
    workdir: Path
    model_dir: Path
    train_file: Path
    eval_file: Path
    peak_flops: float | None
    deadline: float  # time.time() past which no check starts
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return not self.dry_run

    def state(self) -> dict[str, Any]:
        """What a check in another process needs to rebuild this context."""
        return {
            "dry_run": self.dry_run,
            "workdir": str(self.workdir),
            "model_dir": str(self.model_dir),
            "train_file": str(self.train_file),
            "eval_file": str(self.eval_file),
            "peak_flops": self.peak_flops,
            "deadline": self.deadline,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Context:
        return cls(
            dry_run=state["dry_run"],
            scale=DRY_SCALE if state["dry_run"] else GPU_SCALE,
            workdir=Path(state["workdir"]),
            model_dir=Path(state["model_dir"]),
            train_file=Path(state["train_file"]),
            eval_file=Path(state["eval_file"]),
            peak_flops=state["peak_flops"],
            deadline=state["deadline"],
        )

    def rows(self, file: Path | None = None) -> list[Any]:
        """The training rows (or ``file``'s), read as a worker reads a job's instruction dataset."""
        from workers.engine.data import read_training_rows
        from workers.spec import DatasetSchema

        return read_training_rows([file or self.train_file], DatasetSchema.INSTRUCTION)


# --- inputs: a model built from a config, skewed instruction rows -------------------------------


def model_build(scale: Scale, out_dir: Path, device: str) -> Path:
    """The tiny model's tokenizer with a model of ``scale``'s shape (the tiny model itself in a dry run).

    A larger vocabulary than the tokenizer's is fine for training: the extra
    rows are never read, but they cost what a real model's vocabulary costs.
    """
    from workers.tinymodel import build_tiny_model

    if scale.shape is None:
        return build_tiny_model(out_dir, seed=SEED)
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer_dir = build_tiny_model(out_dir.parent / "tokenizer", seed=SEED)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    shape = scale.shape
    config = LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=shape.max_positions,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(SEED)
    # Initialized where it will train (seconds on a GPU, a minute on the CPU), stored in bf16:
    # the engine loads it in float32 as it loads any base model.
    with torch.device(device):
        model = LlamaForCausalLM(config)
    model.to("cpu", torch.bfloat16).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    del model
    return out_dir


def skewed_rows(scale: Scale, count: int, seed: int) -> list[dict[str, str]]:
    """Instruction rows as real data has them: most short, a few long (``long_share`` of them)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        low, high = scale.long_words if rng.random() < scale.long_share else scale.short_words
        rows.append(
            {
                "instruction": " ".join(rng.choices(WORDS, k=rng.randint(3, 12))),
                "output": " ".join(rng.choices(WORDS, k=rng.randint(low, high))),
            }
        )
    return rows


def jsonl_write(path: Path, rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# --- the engine, instrumented from outside -------------------------------------------------------


class BatchCounter:
    """Wraps a collator: every batch's real (example) tokens and its tokens with padding, in order.

    The Trainer collates batch k just before step k + 1 (or one batch ahead), so
    the k-th entry is step k + 1's.
    """

    def __init__(self, collator: Callable[[list[dict[str, list[int]]]], dict[str, Any]]) -> None:
        self.collator = collator
        self.real: list[int] = []
        self.padded: list[int] = []

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        batch = self.collator(features)
        self.real.append(sum(len(feature["input_ids"]) for feature in features))
        self.padded.append(int(batch["input_ids"].numel()))
        return batch


@dataclass
class Timed:
    """Step times and losses of one training run, with the batches that made them."""

    counter: BatchCounter | None = None
    batching: str = ""
    times: dict[int, float] = field(default_factory=dict)
    losses: dict[int, float] = field(default_factory=dict)
    model_summary: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def step(self, step: int, loss: float | None, cuda: bool) -> None:
        if cuda:
            import torch

            torch.cuda.synchronize()
        self.times[step] = time.perf_counter()
        if loss is not None:
            self.losses[step] = float(loss)

    def throughput(self, warmup: int) -> dict[str, float]:
        """Real tokens per second from the end of step ``warmup`` to the last step."""
        assert self.counter is not None
        steps = sorted(self.times)
        if not steps:
            raise RuntimeError("training reported no steps")
        last = steps[-1]
        first = warmup if warmup in self.times and warmup < last else steps[0]
        if first == last:
            raise RuntimeError(f"too few steps ({last}) to time after {warmup} warm-up steps")
        real = sum(self.counter.real[first:last])
        padded = sum(self.counter.padded[first:last])
        seconds = self.times[last] - self.times[first]
        return {
            "timed_steps": last - first,
            "seconds": seconds,
            "real_tokens": real,
            "batch_tokens": padded,
            "tokens_per_second": real / seconds,
            "padding_share": 1 - real / padded if padded else 0.0,
            "peak_batch_tokens": max(self.counter.padded[:last]),
        }


@contextlib.contextmanager
def _attribute(owner: Any, name: str, value: Any) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def engine_watched(timed: Timed, extra_options: dict[str, Any] | None = None) -> Iterator[None]:
    """``workers.engine.train`` as it is, its collator counted and its model's layers noted.

    ``extra_options`` go into the Trainer's arguments beside the job's own: the
    way this bench tries torch.compile and Liger's kernels, which no job asks for yet.
    """
    import workers.engine.train as engine_train

    choose, apply, options = (
        engine_train.batching_choose,
        engine_train.method_apply,
        engine_train.training_options,
    )

    def counted_choose(*args: Any, **kwargs: Any) -> Any:
        batching = choose(*args, **kwargs)
        timed.counter = BatchCounter(batching.collator)
        timed.batching = batching.description
        return dataclasses.replace(batching, collator=timed.counter)

    def noted_apply(model: Any, *args: Any, **kwargs: Any) -> Any:
        applied = apply(model, *args, **kwargs)
        timed.model_summary = model_summary(applied)  # a summary only: the model must be freed after
        return applied

    def extended_options(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {**options(*args, **kwargs), **(extra_options or {})}

    with (
        _attribute(engine_train, "batching_choose", counted_choose),
        _attribute(engine_train, "method_apply", noted_apply),
        _attribute(engine_train, "training_options", extended_options),
    ):
        yield


def model_summary(model: Any) -> dict[str, Any]:
    four_bit = sum(1 for module in model.modules() if type(module).__name__ == "Linear4bit")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"linear4bit_layers": four_bit, "trainable_params": trainable}


def job_spec(ctx: Context, method: dict[str, Any], *, batch: int, steps: int, **resources: Any) -> Any:
    from workers.spec import JobSpec

    adapter = method["name"] != "full"
    return JobSpec.model_validate(
        {
            "job_id": 1,
            "attempt": 1,
            "project": "gpu-check",
            "base_model_uri": str(ctx.model_dir),
            "dataset_uris": [str(ctx.train_file)],
            "mlflow_experiment": "gpu-check",
            "config": {
                "method": method,
                "hyperparameters": {
                    "learning_rate": 1e-3 if adapter else 1e-4,
                    "max_steps": steps,
                    "batch_size": batch,
                    "max_seq_length": ctx.scale.max_seq_length,
                    "seed": SEED,
                    "checkpoint_every_steps": None,
                },
                "resources": resources or {"gpus": 1 if ctx.cuda else 0},
            },
        }
    )


def lora_method(name: str = "lora") -> dict[str, Any]:
    return {"name": name, "r": 16, "alpha": 32, "dropout": 0.05, "target_modules": LLAMA_LINEARS}


def engine_train(
    ctx: Context,
    spec: Any,
    name: str,
    *,
    extra_options: dict[str, Any] | None = None,
    on_first_step: Callable[[], None] | None = None,
) -> tuple[Any, Timed]:
    """``workers.engine.train.train`` on the check's rows, timed step by step."""
    from workers.engine.train import train

    timed = Timed()

    def on_step(step: int, total: int, metrics: dict[str, float]) -> None:
        timed.step(step, metrics.get("loss"), ctx.cuda)
        if on_first_step is not None and len(timed.times) == 1:
            on_first_step()

    rows = ctx.rows()
    with engine_watched(timed, extra_options):
        started = time.perf_counter()
        trained = train(spec, ctx.model_dir, rows, ctx.workdir / name, on_step)
        timed.seconds = time.perf_counter() - started
    return trained, timed


@contextlib.contextmanager
def gpu_memory(cuda: bool) -> Iterator[dict[str, int]]:
    """The peak of allocated GPU memory while the block runs, above what was allocated before it."""
    measured: dict[str, int] = {}
    if not cuda:
        yield measured
        return
    import torch

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    yield measured
    torch.cuda.synchronize()
    measured["baseline"] = before
    measured["peak_allocated"] = torch.cuda.max_memory_allocated() - before
    measured["peak_reserved"] = torch.cuda.max_memory_reserved()


def release(cuda: bool) -> None:
    gc.collect()
    if cuda:
        import torch

        torch.cuda.empty_cache()


# --- figures: FLOPs, MFU, the memory estimate ---------------------------------------------------


def model_config(ctx: Context) -> dict[str, Any]:
    return json.loads((ctx.model_dir / "config.json").read_text())


def mean_causal_context(lengths: Sequence[int]) -> float:
    """The mean number of tokens a token attends to (itself included) over examples of ``lengths``."""
    return sum(n * (n + 1) / 2 for n in lengths) / sum(lengths)


def flops_per_token(config: dict[str, Any], method: Any, context: float) -> float:
    """Model FLOPs of one trained token (forward and backward), recomputation not counted.

    Every weight matrix (the output head included; the embedding is a lookup)
    costs 2 FLOPs per weight forward, 2 for the input's gradient and 2 for the
    weight's own, which frozen weights skip; attention costs 4 per query
    dimension per token of causal context forward, three times that in all.
    """
    from workers.engine.estimate import linear_layers, lora_params, lora_targets, shape_from_config
    from workers.spec import FullMethod, LoraMethod

    shape = shape_from_config(config)
    matmul = shape.layers * (
        2 * shape.hidden * shape.q_dim
        + 2 * shape.hidden * shape.kv_dim
        + 3 * shape.hidden * shape.intermediate
    )
    matmul += shape.vocab * shape.hidden
    attention = 12 * shape.layers * shape.q_dim * context
    if isinstance(method, FullMethod):
        return 6 * matmul + attention
    adapters = 0
    if isinstance(method, LoraMethod):
        targets = lora_targets(linear_layers(shape), method, shape.model_type, [])
        adapters = sum(lora_params(linear, method.r) for linear in targets)
    return 4 * matmul + attention + 6 * adapters


def speed_figures(ctx: Context, spec: Any, timed: Timed) -> dict[str, Any]:
    figures = timed.throughput(ctx.scale.warmup)
    lengths = example_lengths(ctx, spec)
    per_token = flops_per_token(model_config(ctx), spec.config.method, mean_causal_context(lengths))
    figures["flops_per_token"] = per_token
    figures["mfu"] = per_token * figures["tokens_per_second"] / ctx.peak_flops if ctx.peak_flops else None
    return figures


def example_lengths(ctx: Context, spec: Any) -> list[int]:
    """The token length of every training example, as the engine makes them (``sft_examples``)."""
    key = f"lengths-{spec.config.hyperparameters.max_seq_length}"
    if key not in ctx.results:
        from transformers import AutoTokenizer

        from workers.engine.sft import sft_examples

        tokenizer = AutoTokenizer.from_pretrained(ctx.model_dir)
        hyper = spec.config.hyperparameters
        examples = sft_examples(ctx.rows(), tokenizer, hyper.max_seq_length, completion_only_loss=True)
        ctx.results[key] = [len(example["input_ids"]) for example in examples]
    return ctx.results[key]


def speed_text(figures: dict[str, Any], peak_flops: float | None) -> str:
    text = f"{figures['tokens_per_second']:,.0f} real tok/s, {figures['flops_per_token'] / 1e9:.3g} GFLOP/tok"
    if figures.get("mfu") is not None and peak_flops:
        text += f", MFU {100 * figures['mfu']:.1f}% of {peak_flops / 1e12:.0f} TFLOP/s"
    else:
        text += ", MFU n/a (no bf16 peak for this device)"
    return text + f"; padding {100 * figures['padding_share']:.0f}%"


def memory_row(
    ctx: Context, check: str, what: str, spec: Any, measured: dict[str, int], peak_batch: int
) -> Row:
    """The estimate the launch form shows, against what the run allocated at most.

    The estimate sizes activations for a batch of ``batch_size × max_seq_length``
    tokens; scaled to the largest batch the run collated (activations are
    linear in tokens), it is compared with ``max_memory_allocated()``, leaving
    out its 1 GiB allowance for the CUDA context, which the allocator does not count.
    """
    from workers.engine.estimate import training_estimate

    hyper = spec.config.hyperparameters
    estimate = training_estimate(
        model_config(ctx), spec.config, dataset_rows=ctx.scale.rows, tokens_per_row=hyper.max_seq_length
    )
    memory = estimate.memory
    assert memory is not None
    worst = hyper.batch_size * hyper.max_seq_length
    activations = math.ceil(memory.activations * peak_batch / worst)
    at_run = memory.total - memory.overhead - memory.activations + activations
    details: dict[str, Any] = {
        "estimate_bytes": dataclasses.asdict(memory) | {"total": memory.total},
        "estimate_at_run_bytes": at_run,
        "worst_batch_tokens": worst,
        "peak_batch_tokens": peak_batch,
        "notes": estimate.notes,
        **measured,
    }
    title = f"memory estimate: {what}"
    if "peak_allocated" not in measured:
        figure = f"estimate {at_run / MIB:,.0f} MiB at the largest batch run; measured: n/a on the CPU"
        return Row(check, title, Status.PASS, figure, "n/a (CPU)", details)
    error = (at_run - measured["peak_allocated"]) / measured["peak_allocated"]
    details["error"] = error
    figure = (
        f"estimate {at_run / MIB:,.0f} MiB vs allocated {measured['peak_allocated'] / MIB:,.0f} MiB: "
        f"{100 * error:+.1f}% (launch form, {worst:,} tokens/batch: {memory.total / MIB:,.0f} MiB)"
    )
    return Row(
        check, title, Status.PASS, figure, goal_text(abs(error) <= ESTIMATE_GOAL, "within 15%"), details
    )


def goal_text(met: bool | None, goal: str) -> str:
    if met is None:
        return f"{goal}: n/a"
    return f"{goal}: {'met' if met else 'NOT met'}"


def losses_fall(losses: dict[int, float]) -> bool:
    """Whether training learned: every loss finite, and the last few below the first few."""
    values = [losses[step] for step in sorted(losses)]
    if len(values) < 2 or not all(math.isfinite(value) for value in values):
        return False
    window = max(1, len(values) // 4)
    return sum(values[-window:]) / window < sum(values[:window]) / window


# --- the checks ----------------------------------------------------------------------------------


def check_environment(ctx: Context) -> list[Row]:
    import accelerate
    import peft
    import torch
    import transformers

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
    }
    for package in ("bitsandbytes", "liger-kernel", "flash-attn", "pydantic"):
        with contextlib.suppress(PackageNotFoundError):
            versions[package] = package_version(package)
    details: dict[str, Any] = {"versions": versions, "scale": dataclasses.asdict(ctx.scale)}
    text = ", ".join(f"{name} {version}" for name, version in versions.items() if version)
    if not ctx.cuda:
        return [Row("environment", "environment", Status.PASS, text + "; CPU dry run", "", details)]
    device = torch.cuda.get_device_name(0)
    details |= {"device": device, "devices": torch.cuda.device_count(), "peak_flops": ctx.peak_flops}
    details["matmul_tflops"] = matmul_tflops()
    peak = f"{ctx.peak_flops / 1e12:.0f}" if ctx.peak_flops else "unknown"
    text += (
        f"; {device} x{torch.cuda.device_count()}, bf16 peak {peak} TFLOP/s (datasheet), "
        f"8192^3 bf16 matmul {details['matmul_tflops']:.0f} TFLOP/s measured"
    )
    return [Row("environment", "environment", Status.PASS, text, "", details)]


def matmul_tflops(size: int = 8192, repeats: int = 10) -> float:
    """The bf16 matrix product rate this card reaches here: the ceiling MFU is far from or near."""
    import torch

    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000 / repeats
    del a, b
    release(True)
    return 2 * size**3 / seconds / 1e12


SMI_STAND_IN = """#!/bin/sh
# The dry run's nvidia-smi: answers workers.gpus's query as the real one does, busy while ./busy exists.
util=0
[ -e "$(dirname "$0")/busy" ] && util=57
echo "0, Dry-run GPU, 81559, 3, $util"
"""


def check_gpu_discovery(ctx: Context) -> list[Row]:
    """The worker's own GPU inventory (``workers.gpus``, through nvidia-smi) against torch's, and the
    utilization it reports idle and busy, which the control plane's idle flag reads."""
    from workers import gpus

    stand_in = ctx.workdir / "smi"
    path = os.environ["PATH"]
    if ctx.dry_run:
        stand_in.mkdir(parents=True, exist_ok=True)
        (stand_in / "nvidia-smi").write_text(SMI_STAND_IN)
        (stand_in / "nvidia-smi").chmod(0o755)
        path = f"{stand_in}{os.pathsep}{path}"
    # Discovery as a worker does it: no override of the GPUs it finds.
    with _environment(PATH=path, TUNEYARD_GPUS=None, TUNEYARD_GPU_IDS=None):
        if shutil.which("nvidia-smi") is None:
            return [Row("gpu_discovery", "GPU discovery, idle reading", Status.FAIL, "no nvidia-smi on PATH")]
        time.sleep(0 if ctx.dry_run else 3)  # the previous check's load out of the utilization window
        idle = [gpus.gpu_inventory() for _ in range(3)]
        busy = _busy_readings(ctx, stand_in)
    inventory = idle[0]
    expected = _torch_devices() if ctx.cuda else ["Dry-run GPU"]
    names = [gpu.name for gpu in inventory]
    # The control plane's rule (training.services.worker_events): idle when every GPU reads 0%.
    idle_flags = [all(gpu.utilization_percent == 0 for gpu in reading) for reading in idle]
    busy_flags = [all(gpu.utilization_percent == 0 for gpu in reading) for reading in busy]
    details = {
        "inventory": [gpu.model_dump() for gpu in inventory],
        "torch_devices": expected,
        "idle_utilization": [[gpu.utilization_percent for gpu in reading] for reading in idle],
        "busy_utilization": [[gpu.utilization_percent for gpu in reading] for reading in busy],
    }
    problems = []
    if names != expected:
        problems.append(f"nvidia-smi lists {names}, torch {expected}")
    if not any(gpu.memory_total_mb for gpu in inventory):
        problems.append("no memory total read")
    if not any(idle_flags):
        problems.append(f"never read idle: {details['idle_utilization']}")
    if all(busy_flags):
        problems.append(f"read idle under load: {details['busy_utilization']}")
    memory = inventory[0].memory_total_mb if inventory else 0
    figure = (
        f"{len(inventory)} GPU(s): {', '.join(names)}, {memory} MiB; "
        f"utilization idle {details['idle_utilization']}, busy {details['busy_utilization']} (%)"
    )
    status = Status.FAIL if problems else Status.PASS
    return [
        Row(
            "gpu_discovery", "GPU discovery, idle reading", status, "; ".join(problems) or figure, "", details
        )
    ]


@contextlib.contextmanager
def _environment(**values: str | None) -> Iterator[None]:
    """Environment variables set (or, with None, removed) while the block runs."""
    before = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        _environ_set(name, value)
    try:
        yield
    finally:
        for name, value in before.items():
            _environ_set(name, value)


def _environ_set(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _torch_devices() -> list[str]:
    import torch

    return [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]


def _busy_readings(ctx: Context, stand_in: Path) -> list[list[Any]]:
    """nvidia-smi's answers while the GPU multiplies matrices in another thread."""
    from workers import gpus

    if ctx.dry_run:
        (stand_in / "busy").touch()
        try:
            return [gpus.gpu_inventory() for _ in range(3)]
        finally:
            (stand_in / "busy").unlink()
    import torch

    stop = threading.Event()

    def load() -> None:
        a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
        while not stop.is_set():
            for _ in range(20):
                a = (a @ a).clamp_(-1, 1)
            torch.cuda.synchronize()

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        time.sleep(1.0)
        readings = []
        for _ in range(3):
            readings.append(gpus.gpu_inventory())
            time.sleep(0.5)
        return readings
    finally:
        stop.set()
        worker.join()
        release(True)


def check_lora_engine(ctx: Context) -> list[Row]:
    spec = job_spec(ctx, lora_method(), batch=ctx.scale.batch, steps=ctx.scale.steps)
    with gpu_memory(ctx.cuda) as measured:
        trained, timed = engine_train(ctx, spec, "lora-engine")
    release(ctx.cuda)
    figures = speed_figures(ctx, spec, timed)
    ctx.results["lora_adapter"] = str(trained.path)
    ctx.results["engine_tokens_per_second"] = figures["tokens_per_second"]
    details = {**figures, "batching": timed.batching, "losses": timed.losses, "seconds": timed.seconds}
    status = Status.PASS if losses_fall(timed.losses) else Status.FAIL
    figure = f"{speed_text(figures, ctx.peak_flops)}; {timed.batching}"
    if status is Status.FAIL:
        figure = f"the loss did not fall: {_loss_range(timed.losses)}; {figure}"
    return [
        Row("lora_engine", "LoRA bf16, engine", status, figure, "", details),
        memory_row(ctx, "memory_lora_engine", "LoRA, engine", spec, measured, figures["peak_batch_tokens"]),
    ]


def _loss_range(losses: dict[int, float]) -> str:
    values = [losses[step] for step in sorted(losses)]
    return f"{values[0]:.3f} -> {values[-1]:.3f}" if values else "no loss"


def check_lora_trainer(ctx: Context) -> list[Row]:
    """What a team writes without Tuneyard: the Trainer with its padding collator, the same LoRA."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    from workers.engine.data import format_example, tokenize

    spec = job_spec(ctx, lora_method(), batch=ctx.scale.batch, steps=ctx.scale.steps)
    timed = Timed()
    cuda = ctx.cuda

    class StepClock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            timed.step(state.global_step, None, cuda)

    with gpu_memory(ctx.cuda) as measured:
        set_seed(SEED)
        tokenizer = AutoTokenizer.from_pretrained(ctx.model_dir)
        model = AutoModelForCausalLM.from_pretrained(ctx.model_dir, dtype=torch.float32)
        model = get_peft_model(
            model,
            LoraConfig(
                r=16, lora_alpha=32, lora_dropout=0.05, target_modules=LLAMA_LINEARS, task_type="CAUSAL_LM"
            ),
        )
        examples = tokenize([format_example(row) for row in ctx.rows()], tokenizer, ctx.scale.max_seq_length)
        timed.counter = BatchCounter(DataCollatorForLanguageModeling(tokenizer, mlm=False))
        timed.batching = "padded batches (DataCollatorForLanguageModeling)"
        args = TrainingArguments(
            output_dir=str(ctx.workdir / "lora-trainer"),
            per_device_train_batch_size=ctx.scale.batch,
            learning_rate=1e-3,
            max_steps=ctx.scale.steps,
            optim="adamw_torch_fused",
            seed=SEED,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=not cuda,
            bf16=cuda,
            dataloader_num_workers=0,
            label_names=["labels"],
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=examples,
            data_collator=timed.counter,
            processing_class=tokenizer,
            callbacks=[StepClock()],
        )
        started = time.perf_counter()
        trainer.train()
        timed.seconds = time.perf_counter() - started
        timed.losses = {
            entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry
        }
        del trainer, model
    release(ctx.cuda)
    figures = speed_figures(ctx, spec, timed)
    engine = ctx.results.get("engine_tokens_per_second")
    ratio = engine / figures["tokens_per_second"] if engine else None
    figures["engine_over_trainer"] = ratio
    details = {**figures, "losses": timed.losses, "seconds": timed.seconds}
    status = Status.PASS if losses_fall(timed.losses) else Status.FAIL
    figure = speed_text(figures, ctx.peak_flops)
    figure += f"; engine / Trainer {ratio:.2f}x" if ratio else "; engine figure missing"
    goal = goal_text(ratio >= ENGINE_TRAINER_GOAL if ratio and ctx.cuda else None, "engine >= 1.5x")
    return [
        Row("lora_trainer", "LoRA bf16, plain Trainer (padded)", status, figure, goal, details),
        memory_row(
            ctx, "memory_lora_trainer", "LoRA, plain Trainer", spec, measured, figures["peak_batch_tokens"]
        ),
    ]


def full_rows(ctx: Context, check: str, title: str, extra_options: dict[str, Any] | None = None) -> list[Row]:
    spec = job_spec(ctx, {"name": "full"}, batch=ctx.scale.full_batch, steps=ctx.scale.full_steps)
    with gpu_memory(ctx.cuda) as measured:
        _, timed = engine_train(ctx, spec, check, extra_options=extra_options)
    release(ctx.cuda)
    shutil.rmtree(ctx.workdir / check, ignore_errors=True)  # a whole float32 model: GBs on the GPU host
    figures = speed_figures(ctx, spec, timed)
    details = {**figures, "batching": timed.batching, "losses": timed.losses, "options": extra_options or {}}
    status = Status.PASS if losses_fall(timed.losses) else Status.FAIL
    figure = speed_text(figures, ctx.peak_flops)
    if status is Status.FAIL:
        figure = f"the loss did not fall: {_loss_range(timed.losses)}; {figure}"
    mfu = figures.get("mfu")
    goal = goal_text(mfu >= MFU_GOAL if mfu is not None else None, "MFU >= 45%")
    return [
        Row(check, title, status, figure, goal, details),
        memory_row(ctx, f"memory_{check}", title, spec, measured, figures["peak_batch_tokens"]),
    ]


def check_full_engine(ctx: Context) -> list[Row]:
    return full_rows(ctx, "full_engine", "full fine-tune bf16, engine")


def check_full_compile(ctx: Context) -> list[Row]:
    return full_rows(ctx, "full_compile", "full bf16 + torch.compile", {"torch_compile": True})


def check_full_liger(ctx: Context) -> list[Row]:
    from transformers.utils import is_liger_kernel_available

    title = "full bf16 + Liger kernels"
    if not is_liger_kernel_available():
        return [
            Row("full_liger", title, Status.FAIL, "liger-kernel is not installed: make gpu-wheels carries it")
        ]
    return full_rows(ctx, "full_liger", title, {"use_liger_kernel": True})


def check_packing(ctx: Context) -> list[Row]:
    """The engine's packed rows give the padded batch's loss: in float32 to rounding, in bf16 closely."""
    from workers.engine.batching import batching_choose
    from workers.engine.methods import model_load
    from workers.engine.sft import sft_examples
    from workers.engine.train import CausalLMCollator
    from workers.spec import FullMethod

    tokenizer, model = model_load(ctx.model_dir, str(ctx.model_dir), FullMethod())
    device = "cuda" if ctx.cuda else "cpu"
    model.to(device)
    examples = _mixed_batch(ctx, tokenizer, sft_examples)
    padded = CausalLMCollator(tokenizer.pad_token_id)
    batching = batching_choose(model, "auto", padded=padded)
    details: dict[str, Any] = {
        "batching": batching.description,
        "lengths": [len(e["input_ids"]) for e in examples],
    }
    if not batching.description.startswith("packed"):
        del model
        release(ctx.cuda)
        return [
            Row(
                "packing_sdpa",
                "packing = padded loss (SDPA)",
                Status.FAIL,
                f"the engine would not pack here: {batching.description}",
                "",
                details,
            )
        ]
    losses = {}
    for precision in ("float32", "bfloat16"):
        for kind, collate in (("padded", padded), ("packed", batching.collator)):
            losses[f"{kind}_{precision}"] = _batch_loss(model, collate(examples), device, precision)
    del model
    release(ctx.cuda)
    fp32 = abs(losses["packed_float32"] - losses["padded_float32"]) / losses["padded_float32"]
    bf16 = abs(losses["packed_bfloat16"] - losses["padded_bfloat16"]) / losses["padded_bfloat16"]
    rows_packed, rows_padded = batching.collator(examples)["input_ids"], padded(examples)["input_ids"]
    details |= {
        "losses": losses,
        "fp32_rel_diff": fp32,
        "bf16_rel_diff": bf16,
        "packed_shape": list(rows_packed.shape),
        "padded_shape": list(rows_padded.shape),
    }
    ok = fp32 <= 1e-4 and bf16 <= 2e-2
    figure = (
        f"{batching.description}: rel. loss diff fp32 {fp32:.1e} (<= 1e-4), bf16 {bf16:.1e} (<= 2e-2); "
        f"{rows_packed.numel():,} tokens packed vs {rows_padded.numel():,} padded"
    )
    rows = [
        Row(
            "packing_sdpa",
            "packing = padded loss (SDPA)",
            Status.PASS if ok else Status.FAIL,
            figure,
            "",
            details,
        )
    ]
    return rows + check_packing_flash(ctx, examples)


def _mixed_batch(
    ctx: Context, tokenizer: Any, sft_examples: Callable[..., Any]
) -> list[dict[str, list[int]]]:
    """A batch as skewed as the data: its longest example and a run of short ones."""
    examples = sft_examples(ctx.rows(), tokenizer, ctx.scale.max_seq_length, completion_only_loss=True)
    examples.sort(key=lambda example: len(example["input_ids"]), reverse=True)
    return examples[:1] + examples[-(ctx.scale.batch - 1) :]


def _batch_loss(model: Any, batch: dict[str, Any], device: str, precision: str) -> float:
    import torch

    inputs = {key: value.to(device) if hasattr(value, "to") else value for key, value in batch.items()}
    matmul = torch.get_float32_matmul_precision()
    # TF32 would round float32 products to 10 bits and hide a real difference under its noise.
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            return float(model(**inputs).loss)
    finally:
        torch.set_float32_matmul_precision(matmul)


def check_packing_flash(ctx: Context, examples: list[dict[str, list[int]]]) -> list[Row]:
    """With flash-attention installed, the engine packs a batch into one row for its varlen kernels."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import is_flash_attn_2_available, is_flash_attn_3_available

    from workers.engine.batching import batching_choose
    from workers.engine.train import CausalLMCollator

    title = "packing = padded loss (flash-attn varlen)"
    if not ctx.cuda:
        return [Row("packing_flash", title, Status.SKIP, "needs CUDA", "")]
    implementation = (
        "flash_attention_3"
        if is_flash_attn_3_available()
        else "flash_attention_2"
        if is_flash_attn_2_available()
        else None
    )
    if implementation is None:
        return [Row("packing_flash", title, Status.SKIP, FLASH_UNAVAILABLE, "")]
    model = AutoModelForCausalLM.from_pretrained(
        ctx.model_dir, dtype=torch.bfloat16, attn_implementation=implementation
    ).to("cuda")
    padded = CausalLMCollator(0)
    batching = batching_choose(model, "auto", padded=padded)
    losses = {
        kind: _batch_loss(model, collate(examples), "cuda", "bfloat16")
        for kind, collate in (("padded", padded), ("packed", batching.collator))
    }
    del model
    release(True)
    diff = abs(losses["packed"] - losses["padded"]) / losses["padded"]
    ok = batching.description.startswith("packed") and diff <= 2e-2
    figure = f"{batching.description}: rel. loss diff bf16 {diff:.1e} (<= 2e-2)"
    return [Row("packing_flash", title, Status.PASS if ok else Status.FAIL, figure, "", {"losses": losses})]


def check_qlora(ctx: Context) -> list[Row]:
    """4-bit NF4 loading through bitsandbytes, and 20 steps of LoRA on it."""
    from workers.engine import JobInputError

    # A spec with a GPU even in the dry run: the API refuses QLoRA without one.
    spec = job_spec(ctx, lora_method("qlora"), batch=ctx.scale.batch, steps=20, gpus=1)
    title = "QLoRA (4-bit NF4), 20 steps"
    try:
        with gpu_memory(ctx.cuda) as measured:
            _, timed = engine_train(ctx, spec, "qlora")
    except JobInputError as exc:
        # Where CUDA is missing the engine must refuse it as a bad input, which is a pass of its own kind.
        status = Status.SKIP if ctx.dry_run else Status.FAIL
        return [Row("qlora", title, status, f"the engine refused it: {exc}", "")]
    release(ctx.cuda)
    figures = speed_figures(ctx, spec, timed)
    layers = timed.model_summary.get("linear4bit_layers", 0)
    trains = losses_fall(timed.losses)
    ok = trains and layers > 0
    figure = (
        f"{layers} Linear4bit layers; loss {_loss_range(timed.losses)}; {speed_text(figures, ctx.peak_flops)}"
    )
    details = {**figures, "losses": timed.losses, **timed.model_summary}
    return [
        Row(
            "qlora",
            title,
            Status.PASS if ok else Status.FAIL,
            figure,
            goal_text(trains, "QLoRA trains"),
            details,
        ),
        memory_row(ctx, "memory_qlora", "QLoRA", spec, measured, figures["peak_batch_tokens"]),
    ]


def distributed_rows(
    ctx: Context, check: str, title: str, method: dict[str, Any], resources: dict[str, Any]
) -> list[Row]:
    """One rank's part of a job under torchrun: the engine's training in a real process group.

    The process group is the Trainer's own (NCCL on GPUs, gloo on the CPU); an
    all-reduce at the first step shows it carries data.
    """
    import torch
    import torch.distributed as dist

    group: dict[str, Any] = {}

    def probe() -> None:
        if not dist.is_initialized():
            group["initialized"] = False
            return
        device = f"cuda:{torch.cuda.current_device()}" if ctx.cuda else "cpu"
        value = torch.ones(1, device=device)
        dist.all_reduce(value)
        group.update(
            initialized=True,
            backend=str(dist.get_backend()),
            world_size=dist.get_world_size(),
            all_reduce_ok=int(value.item()) == dist.get_world_size(),
        )

    spec = job_spec(
        ctx, method, batch=ctx.scale.distributed_batch, steps=ctx.scale.distributed_steps, **resources
    )
    with gpu_memory(ctx.cuda) as measured:
        # One work folder for every rank, as the engine's ranks share the job's.
        _, timed = engine_train(ctx, spec, check, on_first_step=probe)
    release(ctx.cuda)
    warmup = min(ctx.scale.warmup, ctx.scale.distributed_steps - 2)
    figures = timed.throughput(warmup)
    # FSDP's CPU offload may ask for "cpu:gloo,cuda:nccl": the GPU's part is what counts here.
    expected_backend = "nccl" if ctx.cuda else "gloo"
    ok = (
        expected_backend in str(group.get("backend"))
        and bool(group.get("all_reduce_ok"))
        and losses_fall(timed.losses)
    )
    figure = (
        f"{group.get('world_size', '?')} rank(s) over {group.get('backend', 'no process group')}, "
        f"all-reduce {'ok' if group.get('all_reduce_ok') else 'FAILED'}; loss {_loss_range(timed.losses)}; "
        f"{figures['tokens_per_second']:,.0f} real tok/s per rank"
    )
    details = {**figures, "group": group, "losses": timed.losses, "batching": timed.batching}
    return [
        Row(check, title, Status.PASS if ok else Status.FAIL, figure, "", details),
        memory_row(ctx, f"memory_{check}", title, spec, measured, figures["peak_batch_tokens"]),
    ]


def check_fsdp(ctx: Context) -> list[Row]:
    if ctx.cuda:
        resources = {"gpus": gpu_count(), "distributed": {"name": "fsdp", "cpu_offload": True}}
        return distributed_rows(
            ctx, "fsdp", "FSDP + CPU offload, full fine-tune", {"name": "full"}, resources
        )
    # The CPU has no offload (there is no GPU memory to free): full shard over two processes instead.
    resources = {"cpu_processes": 2, "distributed": {"name": "fsdp"}}
    return distributed_rows(ctx, "fsdp", "FSDP (full shard, 2 CPU processes)", {"name": "full"}, resources)


def check_ddp(ctx: Context) -> list[Row]:
    if ctx.cuda:
        resources = {"gpus": gpu_count(), "distributed": {"name": "ddp"}}
        return distributed_rows(ctx, "ddp", "DDP over NCCL, LoRA", lora_method(), resources)
    return distributed_rows(ctx, "ddp", "DDP over gloo (dry run), LoRA", lora_method(), {"cpu_processes": 1})


def gpu_count() -> int:
    import torch

    return max(1, torch.cuda.device_count())


def check_evaluate(ctx: Context) -> list[Row]:
    """An evaluate job's generation (BLEU, ROUGE, exact match) on the LoRA check's adapter."""
    import torch

    from workers.engine.evaluation.job import evaluated_model_load, evaluation_data, model_evaluate
    from workers.spec import EvaluationConfig, EvaluationMetric, TrainedArtifactKind

    adapter = ctx.results.get("lora_adapter")
    artifact = Path(adapter) if adapter else None
    tokenizer, model = evaluated_model_load(
        ctx.model_dir,
        str(ctx.model_dir),
        artifact,
        TrainedArtifactKind.ADAPTER if artifact else None,
        str(artifact or ""),
        on_gpu=ctx.cuda,
    )
    config = EvaluationConfig(
        metrics=[EvaluationMetric.BLEU, EvaluationMetric.ROUGE, EvaluationMetric.EXACT_MATCH],
        batch_size=ctx.scale.eval_batch,
        max_new_tokens=ctx.scale.max_new_tokens,
        max_seq_length=ctx.scale.max_seq_length,
    )
    rows = ctx.rows(ctx.eval_file)
    data = evaluation_data(config, tokenizer, rows=rows)
    device = next(model.parameters()).device.type
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    if ctx.cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    metrics = model_evaluate(model, tokenizer, config, data)
    if ctx.cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    del model
    release(ctx.cuda)
    ok = device == ("cuda" if ctx.cuda else "cpu") and all(math.isfinite(value) for value in metrics.values())
    figure = (
        f"{len(rows)} rows in {seconds:.1f} s: {len(rows) / seconds:.1f} rows/s on {device} in {dtype}, "
        f"up to {ctx.scale.max_new_tokens} new tokens each ({'adapter' if artifact else 'base model'}); "
        f"bleu {metrics.get('bleu', float('nan')):.2f}"
    )
    details = {"metrics": metrics, "seconds": seconds, "rows": len(rows), "device": device, "dtype": dtype}
    return [
        Row("evaluate", "evaluate job: generation", Status.PASS if ok else Status.FAIL, figure, "", details)
    ]


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Context], list[Row]]
    title: str
    seconds: int  # what it takes on an H100, for the time budget
    # None: in this process; "own": in a process of its own (kernels patched into it stay
    # there); "ranks": under torchrun, with as many ranks as the job has processes.
    process: str | None = None
    # Why a dry run skips it, for a check that needs CUDA to mean anything.
    cuda_only: str | None = None


CHECKS: tuple[Check, ...] = (
    Check("environment", check_environment, "environment", 5),
    Check("gpu_discovery", check_gpu_discovery, "GPU discovery, idle reading", 10),
    Check("lora_engine", check_lora_engine, "LoRA bf16, engine", 25),
    Check("lora_trainer", check_lora_trainer, "LoRA bf16, plain Trainer (padded)", 25),
    Check("full_engine", check_full_engine, "full fine-tune bf16, engine", 40),
    Check("packing", check_packing, "packing = padded loss", 15),
    Check("qlora", check_qlora, "QLoRA (4-bit NF4), 20 steps", 35),
    Check("evaluate", check_evaluate, "evaluate job: generation", 20),
    Check("ddp", check_ddp, "DDP", 45, process="ranks"),
    Check("fsdp", check_fsdp, "FSDP", 75, process="ranks"),
    Check(
        "full_liger", check_full_liger, "full bf16 + Liger kernels", 50, "own", "needs CUDA (Triton kernels)"
    ),
    # Last, and started with as little as a minute left: what compiling costs is one of its findings,
    # and a run it outlasts is stopped at the deadline with that said.
    Check(
        "full_compile",
        check_full_compile,
        "full bf16 + torch.compile",
        60,
        "own",
        "needs CUDA (compiling a training step on the CPU takes minutes)",
    ),
)
# The order of the table, which is not the order of running (in-process checks go first).
TABLE_ORDER = (
    "environment gpu_discovery lora_engine lora_trainer full_engine full_compile full_liger packing "
    "packing_sdpa packing_flash qlora fsdp ddp evaluate memory_lora_engine memory_lora_trainer "
    "memory_full_engine memory_full_compile memory_full_liger memory_qlora memory_fsdp memory_ddp"
).split()


# --- running: in this process, in a process of its own, under torchrun --------------------------


def run_check(ctx: Context, check: Check, state_file: Path) -> list[Row]:
    left = ctx.deadline - time.time()
    if ctx.dry_run and check.cuda_only:
        return [Row(check.name, check.title, Status.SKIP, check.cuda_only)]
    if left < check.seconds and not ctx.dry_run:
        return [
            Row(
                check.name,
                check.title,
                Status.SKIP,
                f"out of time: {left:.0f} s left, needs ~{check.seconds} s",
            )
        ]
    print(f"gpu_check: {check.name} ...", flush=True)
    started = time.perf_counter()
    try:
        rows = check.run(ctx) if check.process is None else _run_elsewhere(ctx, check, state_file, left)
    except Exception as exc:  # a check's failure is a row of the table, not the end of the run
        traceback.print_exc()
        rows = [Row(check.name, check.title, Status.FAIL, f"{type(exc).__name__}: {_first_line(exc)}")]
        release(ctx.cuda)
    held = ""
    if ctx.cuda:
        import torch

        # What this process still holds after a check: a leak would crowd the checks after it.
        held = f" (GPU memory still allocated: {torch.cuda.memory_allocated() / MIB:,.0f} MiB)"
    for row in rows:
        row.details.setdefault("wall_seconds", round(time.perf_counter() - started, 1))
        print(f"gpu_check: {row.check}: {row.status.value}: {row.figure}{held}", flush=True)
    return rows


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


def _run_elsewhere(ctx: Context, check: Check, state_file: Path, left: float) -> list[Row]:
    result = ctx.workdir / f"{check.name}.result.json"
    result.unlink(missing_ok=True)
    here = [sys.executable, "-m", "bench.gpu_check", "--child", check.name, "--state", str(state_file)]
    command = [*here, "--result", str(result)]
    if check.process == "ranks":
        ranks = _ranks(ctx, check)
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
            "--max-restarts=0", "-m", "bench.gpu_check", *here[3:], "--result", str(result),
        ]  # fmt: skip
    limit = left if not ctx.dry_run else 600
    code = _run_bounded(command, limit)
    if result.is_file():
        return [Row.from_dict(row) for row in json.loads(result.read_text())]
    why = "ran out of time" if code is None else f"exited with code {code} and no result"
    return [Row(check.name, check.title, Status.FAIL, f"its process {why} (see the log)")]


def _ranks(ctx: Context, check: Check) -> int:
    if ctx.dry_run:
        return 2 if check.name == "fsdp" else 1
    import torch

    return max(1, torch.cuda.device_count())


def _run_bounded(command: list[str], seconds: float) -> int | None:
    """Run ``command`` from the repository root; None if it outlived ``seconds`` (then it is stopped).

    torchrun passes a SIGTERM on to its ranks and waits for them; SIGKILL follows if it must.
    The command stays in this process's group, so a ``timeout`` that stops this run stops it too.
    """
    process = subprocess.Popen(command, cwd=ROOT)
    try:
        return process.wait(timeout=max(seconds, 1))
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return None


def child_main(name: str, state_file: Path, result: Path) -> int:
    """One check in this process (a fresh one, or one rank under torchrun); rank 0 writes its rows."""
    from workers.engine import distributed

    _quiet()
    ctx = Context.from_state(json.loads(state_file.read_text()))
    check = next(check for check in CHECKS if check.name == name)
    try:
        rows = check.run(ctx)
    except Exception as exc:  # reported as the check's row, like an in-process failure
        traceback.print_exc()
        rows = [Row(name, check.title, Status.FAIL, f"{type(exc).__name__}: {_first_line(exc)}")]
    if distributed.is_main():
        result.write_text(json.dumps([row.as_dict() for row in rows], default=str))
    return 0


# --- the table -----------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    order = {name: index for index, name in enumerate(TABLE_ORDER)}
    ordered = sorted(rows, key=lambda row: order.get(row.check, len(order)))
    lines = ["| check | result | figure | goal |", "| --- | --- | --- | --- |"]
    for row in ordered:
        cells = [row.title, row.status.value, row.figure, row.goal]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines)


def peak_flops_for(device_name: str) -> float | None:
    for piece, tflops in BF16_PEAK_TFLOPS:
        if piece in device_name:
            return tflops * 1e12
    return None


def _quiet() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="every check on the CPU with the tiny model")
    parser.add_argument("--out", type=Path, help="folder for gpu_check.md and gpu_check.json")
    parser.add_argument("--only", help="comma-separated checks to run (default: all)")
    parser.add_argument("--budget-seconds", type=float, default=430, help="no check starts past this")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak, if not by its name")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child, args.state, args.result)

    started = time.time()
    _quiet()
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device here: use --dry-run to run the checks on the CPU")
    chosen = set(args.only.split(",")) if args.only else {check.name for check in CHECKS}
    unknown = chosen - {check.name for check in CHECKS}
    if unknown:
        parser.error(f"unknown checks: {', '.join(sorted(unknown))}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tuneyard-gpu-check-", dir=_scratch_root(args)))
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    try:
        ctx = _prepare(args, workdir, started)
        state_file = workdir / "state.json"
        state_file.write_text(json.dumps(ctx.state()))
        for check in CHECKS:
            if check.name in chosen:
                rows.extend(run_check(ctx, check, state_file))
                # Written after every check: a run cut short still leaves the rows it made.
                report_write(args.out, ctx, rows, started, final=False)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\n" + report_write(args.out, ctx, rows, started, final=True), flush=True)
    return 1 if any(row.status is Status.FAIL for row in rows) else 0


def _scratch_root(args: argparse.Namespace) -> str | None:
    """Memory-backed /dev/shm where it has room: the full fine-tunes write a 4 GB model each."""
    shm = Path("/dev/shm")
    if not args.dry_run and shm.is_dir() and shutil.disk_usage(shm).free > 32 * 1024**3:
        return str(shm)
    return None


def report_write(out: Path | None, ctx: Context, rows: list[Row], started: float, *, final: bool) -> str:
    """The table as Markdown (returned, and under ``out`` with the JSON of every figure)."""
    where = " (dry run: the CPU, float32, the tiny model)" if ctx.dry_run else ""
    state = f"{time.time() - started:.0f} s in all" if final else "still running"
    heading = f"GPU check{where}: {ctx.scale.name}; {state}"
    report = f"{heading}\n\n{table(rows)}\n"
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.md").write_text(report)
        payload = {"heading": heading, "finished": final, "rows": [row.as_dict() for row in rows]}
        (out / "gpu_check.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return report


def _prepare(args: argparse.Namespace, workdir: Path, started: float) -> Context:
    """Build the model and write the rows every check reads."""
    import torch

    scale = DRY_SCALE if args.dry_run else GPU_SCALE
    device = "cpu" if args.dry_run else "cuda"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    if peak is None and not args.dry_run:
        peak = peak_flops_for(torch.cuda.get_device_name(0))
    print(f"gpu_check: building {scale.name} ...", flush=True)
    model_dir = model_build(scale, workdir / "model", device)
    release(not args.dry_run)
    ctx = Context(
        dry_run=args.dry_run,
        scale=scale,
        workdir=workdir,
        model_dir=model_dir,
        train_file=jsonl_write(workdir / "data" / "train.jsonl", skewed_rows(scale, scale.rows, seed=1)),
        eval_file=jsonl_write(workdir / "data" / "eval.jsonl", skewed_rows(scale, scale.eval_rows, seed=2)),
        peak_flops=peak,
        deadline=started + args.budget_seconds,
    )
    lengths = example_lengths(ctx, job_spec(ctx, {"name": "full"}, batch=scale.batch, steps=1))
    print(
        f"gpu_check: {len(lengths)} rows, {sum(lengths):,} tokens; lengths {min(lengths)}..{max(lengths)}, "
        f"median {sorted(lengths)[len(lengths) // 2]}",
        flush=True,
    )
    return ctx


if __name__ == "__main__":
    sys.exit(main())
