"""What a fine-tune will cost, before it is launched: parameters, memory per GPU, tokens and steps.

Computed from the base model's ``config.json`` alone (a dict, no weights and
no torch: the control plane imports this), the method, the hyperparameters
and the dataset's size. The parameter counts are exact for the Llama-style
decoder layout that most open causal LMs share (Llama, Mistral, Qwen2, Gemma);
memory is an estimate, and every assumption it makes is listed in ``notes``.

Memory follows the engine as it trains (``workers.engine.train``): weights are
loaded in float32 (on a GPU, bf16 comes from autocast), AdamW keeps two float32
moments per trainable weight, and each process of a multi-process job takes
``batch_size`` examples. DDP replicates the model in every process; FSDP and
DeepSpeed ZeRO split what their strategy shards evenly across the processes,
and a strategy's CPU offload moves it off the GPU (``sharded_memory``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from workers.spec import (
    DeepSpeedStrategy,
    FsdpStrategy,
    FullMethod,
    Ia3Method,
    LoraMethod,
    PrefixTuningMethod,
    PromptTuningMethod,
    PTuningMethod,
    QLoraMethod,
    TrainingConfig,
)

GIB = 1024**3
WEIGHT_BYTES = 4  # float32 weights, as the engine loads them
GRADIENT_BYTES = 4  # a gradient has its weight's dtype
OPTIMIZER_BYTES = 8  # AdamW: first and second moment, float32 each
# CUDA context, cuBLAS workspaces and the caching allocator's fragmentation:
# a rule of thumb, not a measurement of any one GPU.
GPU_OVERHEAD_BYTES = 1 * GIB

# The architectures whose config fields mean what the formulas below assume.
LLAMA_STYLE = frozenset({"llama", "mistral", "qwen2", "gemma"})
# peft's default LoRA targets for these (peft.utils.constants), used when a job names none.
LORA_DEFAULT_TARGETS: dict[str, list[str]] = {t: ["q_proj", "v_proj"] for t in LLAMA_STYLE}


class EstimateError(ValueError):
    """The config or the method cannot be estimated; the message says why, for a person."""


@dataclass(frozen=True)
class Shape:
    """The numbers of a Llama-style config that parameter counts and activations depend on."""

    model_type: str
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


@dataclass(frozen=True)
class Linear:
    """One weight matrix the model has, under the name peft would match it by."""

    name: str  # e.g. "model.layers.0.self_attn.q_proj"
    fan_in: int
    fan_out: int
    embedding: bool = False


@dataclass(frozen=True)
class Memory:
    """One device's share, in bytes (under DDP each GPU of a multi-GPU job holds all of it)."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.overhead


@dataclass(frozen=True)
class Estimate:
    gpus: int
    tokens_per_epoch: int
    tokens_total: int
    steps: int
    # None when the base model's config could not be read: ``notes`` says why.
    total_params: int | None = None
    trainable_params: int | None = None
    memory: Memory | None = None
    gpu_memory_bytes: int | None = None  # of the smallest GPU that could run it, where known
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool | None:
        """Whether one device's share fits its GPU; None when either is unknown (or there is no GPU)."""
        if self.gpus == 0 or self.gpu_memory_bytes is None or self.memory is None:
            return None
        return self.memory.total <= self.gpu_memory_bytes

    def as_dict(self) -> dict[str, Any]:
        def gib(value: int | None) -> float | None:
            return None if value is None else round(value / GIB, 3)

        memory = self.memory
        return {
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "trainable_percent": (
                round(100 * self.trainable_params / self.total_params, 4)
                if self.total_params and self.trainable_params is not None
                else None
            ),
            "gpus": self.gpus,
            "memory_per_device_gib": gib(memory.total) if memory else None,
            # Exact bytes for programs, rounded GiB for people.
            "memory_bytes": {**asdict(memory), "total": memory.total} if memory else None,
            "memory_gib": {key: gib(value) for key, value in asdict(memory).items()} if memory else None,
            "gpu_memory_gib": gib(self.gpu_memory_bytes),
            "fits": self.fits,
            "tokens_per_epoch": self.tokens_per_epoch,
            "tokens_total": self.tokens_total,
            "steps": self.steps,
            "notes": list(self.notes),
        }


def training_estimate(
    model_config: Mapping[str, Any] | None,
    training: TrainingConfig,
    *,
    dataset_rows: int,
    tokens_per_row: float,
    gpu_memory_bytes: int | None = None,
    notes: list[str] | None = None,
) -> Estimate:
    """The estimate for training ``training`` on a model with ``model_config`` (its config.json).

    Without a config, only tokens and steps are estimated. ``tokens_per_row``
    is the mean token length of a row before truncation; rows are cut to
    ``max_seq_length`` (with the end-of-sequence token) as the engine cuts them.
    ``notes`` are the caller's own caveats (where its numbers came from).
    """
    if dataset_rows < 1:
        raise EstimateError("the dataset has no rows")
    notes = list(notes or [])
    hyper = training.hyperparameters
    gpus = training.resources.gpus
    row_tokens = min(tokens_per_row + 1, hyper.max_seq_length)  # + the eos the engine appends
    steps, examples = training_steps(
        dataset_rows,
        hyper.batch_size,
        hyper.epochs,
        hyper.max_steps,
        training.resources.processes,
        hyper.gradient_accumulation_steps,
    )
    sizes: dict[str, Any] = {}
    if model_config is not None:
        sizes = _model_sizes(model_config, training, notes)
    return Estimate(
        gpus=gpus,
        tokens_per_epoch=math.ceil(dataset_rows * row_tokens),
        tokens_total=math.ceil(examples * row_tokens),
        steps=steps,
        gpu_memory_bytes=gpu_memory_bytes if gpus else None,
        notes=notes,
        **sizes,
    )


def _model_sizes(config: Mapping[str, Any], training: TrainingConfig, notes: list[str]) -> dict[str, Any]:
    shape = shape_from_config(config)
    if shape.model_type not in LLAMA_STYLE:
        notes.append(
            f"model type {shape.model_type!r} is read as a Llama-style decoder; its counts may be off"
        )
    total = total_params(shape)
    base = total
    method = training.method
    targets: list[Linear] = []
    if isinstance(method, LoraMethod):
        targets = lora_targets(linear_layers(shape), method, shape.model_type, notes)
        trainable = sum(lora_params(linear, method.r) for linear in targets)
        total += trainable  # the adapters are weights the model carries too
    elif isinstance(method, FullMethod):
        trainable = total
    else:
        trainable = prompt_method_params(shape, method)
        notes.append(f"{method.name}'s trainable parameters follow peft's layout for a Llama-style model")
        total += trainable
    hyper = training.hyperparameters
    on_gpu = training.resources.gpus > 0
    # QLoRA keeps the frozen base in 4-bit NF4 (half a byte a weight, plus
    # about 1/64 of that for its block scales); the adapters stay in float32.
    if isinstance(method, QLoraMethod):
        weights = math.ceil(base * 0.5 * (1 + 1 / 64)) + (total - base) * WEIGHT_BYTES
    else:
        weights = total * WEIGHT_BYTES
    memory = Memory(
        # every parameter (adapters included), float32 unless quantized
        weights=weights,
        # only trainable parameters have a gradient (a frozen base keeps none)
        gradients=trainable * GRADIENT_BYTES,
        # AdamW: m and v, float32, per trainable parameter
        optimizer=trainable * OPTIMIZER_BYTES,
        activations=activation_bytes(
            shape, targets, method, tokens=hyper.batch_size * hyper.max_seq_length, on_gpu=on_gpu
        ),
        overhead=GPU_OVERHEAD_BYTES if on_gpu else 0,
    )
    memory = sharded_memory(memory, training, _layer_weight_bytes(shape), notes)
    return {"total_params": total, "trainable_params": trainable, "memory": memory}


def sharded_memory(memory: Memory, training: TrainingConfig, layer_bytes: int, notes: list[str]) -> Memory:
    """One process's share under the job's strategy; DDP keeps everything in every process.

    FSDP (full shard) and ZeRO stage 3 split weights, gradients and optimizer
    state; stages 2 and 1 split the gradients and optimizer state, or only the
    latter. Split parts are divided evenly by the processes (in truth a
    little uneven, by whole layers). A sharded weight must be gathered whole
    for its layer's forward and backward: one decoder layer's float32 weights
    are added for that. Offloaded parts live in host memory instead of the GPU's.
    """
    strategy = training.resources.distributed
    n = training.resources.processes
    if isinstance(strategy, FsdpStrategy):
        sharded, offloaded = {"weights", "gradients", "optimizer"}, strategy.cpu_offload
        offload = {"weights", "gradients", "optimizer"} if offloaded else set()
        name = "FSDP (full shard)"
    elif isinstance(strategy, DeepSpeedStrategy):
        sharded = {1: {"optimizer"}, 2: {"optimizer", "gradients"}, 3: {"optimizer", "gradients", "weights"}}[
            strategy.stage
        ]
        offload = set()
        if strategy.cpu_offload:
            offload = {"optimizer", "weights"} if strategy.stage == 3 else {"optimizer"}
        name = f"DeepSpeed ZeRO stage {strategy.stage}"
    else:
        return memory
    parts = {"weights": memory.weights, "gradients": memory.gradients, "optimizer": memory.optimizer}
    share = {
        key: 0 if key in offload else (math.ceil(value / n) if key in sharded else value)
        for key, value in parts.items()
    }
    if "weights" in sharded:
        share["weights"] += layer_bytes
    where = f"; {', '.join(sorted(offload))} offloaded to host memory" if offload else ""
    notes.append(f"{name} over {n} processes: {', '.join(sorted(sharded))} split evenly{where}")
    return Memory(activations=memory.activations, overhead=memory.overhead, **share)


def _layer_weight_bytes(shape: Shape) -> int:
    """One decoder layer's weights, gathered whole while it computes under a sharded strategy."""
    h, i = shape.hidden, shape.intermediate
    return (2 * h * shape.q_dim + 2 * h * shape.kv_dim + 3 * h * i) * WEIGHT_BYTES


def shape_from_config(config: Mapping[str, Any]) -> Shape:
    """The Llama-style numbers of ``config``; EstimateError names the first field that is missing."""
    # Multimodal configs nest the language model's config.
    nested = config.get("text_config")
    text: Mapping[str, Any] = nested if isinstance(nested, Mapping) else config

    def number(name: str, default: int | None = None) -> int:
        value = text.get(name)
        if value is None:  # absent, or written as null
            value = default
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise EstimateError(f"the base model's config has no usable {name!r}; cannot estimate it")
        return value

    model_type = str(text.get("model_type") or config.get("model_type") or "unknown")
    hidden = number("hidden_size")
    heads = number("num_attention_heads")
    attention_bias = bool(text.get("attention_bias", False))
    return Shape(
        model_type=model_type,
        vocab=number("vocab_size"),
        hidden=hidden,
        intermediate=number("intermediate_size"),
        layers=number("num_hidden_layers"),
        heads=heads,
        kv_heads=number("num_key_value_heads", heads),
        head_dim=number("head_dim", hidden // heads),
        tied_embeddings=bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
        # Qwen2 always has biases on q, k and v, and none on o.
        qkv_bias=attention_bias or model_type == "qwen2",
        o_bias=attention_bias,
        mlp_bias=bool(text.get("mlp_bias", False)),
    )


def linear_layers(shape: Shape) -> list[Linear]:
    """Every weight matrix peft could put an adapter on, with its module name and shape."""
    h, i = shape.hidden, shape.intermediate
    linears = [Linear("model.embed_tokens", shape.vocab, h, embedding=True)]
    for layer in range(shape.layers):
        attn, mlp = f"model.layers.{layer}.self_attn", f"model.layers.{layer}.mlp"
        linears += [
            Linear(f"{attn}.q_proj", h, shape.q_dim),
            Linear(f"{attn}.k_proj", h, shape.kv_dim),
            Linear(f"{attn}.v_proj", h, shape.kv_dim),
            Linear(f"{attn}.o_proj", shape.q_dim, h),
            Linear(f"{mlp}.gate_proj", h, i),
            Linear(f"{mlp}.up_proj", h, i),
            Linear(f"{mlp}.down_proj", i, h),
        ]
    if not shape.tied_embeddings:
        linears.append(Linear("lm_head", h, shape.vocab))
    return linears


def total_params(shape: Shape) -> int:
    """Every weight of the base model.

    embeddings:  V·h, and as much again for the output head unless tied
    per layer:   q: h·q_dim, k and v: h·kv_dim each, o: q_dim·h,
                 MLP (gated): gate and up h·i each, down i·h,
                 two RMSNorm scales of h, and the biases the config turns on
    final norm:  h
    """
    h, i = shape.hidden, shape.intermediate
    attention = 2 * h * shape.q_dim + 2 * h * shape.kv_dim
    attention += (shape.q_dim + 2 * shape.kv_dim) * shape.qkv_bias + h * shape.o_bias
    mlp = 3 * h * i + (2 * i + h) * shape.mlp_bias
    per_layer = attention + mlp + 2 * h
    head = 0 if shape.tied_embeddings else shape.vocab * h
    return shape.vocab * h + shape.layers * per_layer + h + head


def lora_targets(
    linears: list[Linear], method: LoraMethod, model_type: str, notes: list[str]
) -> list[Linear]:
    """The matrices peft puts an adapter on: a name matches a target that is it or a dotted suffix of it."""
    names = method.target_modules
    if names is None:
        names = LORA_DEFAULT_TARGETS.get(model_type)
        if names is None:
            names = ["q_proj", "v_proj"]
            notes.append(f"peft's default LoRA targets for {model_type!r} are assumed to be q_proj, v_proj")
    targets = [
        linear for linear in linears if any(linear.name == t or linear.name.endswith(f".{t}") for t in names)
    ]
    if not targets:
        # peft refuses such a config too: better to hear it before the job is queued.
        raise EstimateError(f"none of the LoRA target modules {', '.join(names)} is in the base model")
    return targets


def lora_params(linear: Linear, r: int) -> int:
    """A LoRA pair on a (fan_in → fan_out) matrix: A is r × fan_in, B is fan_out × r.

    (An embedding's pair is the same count: A is r × vocab, B is hidden × r.)
    """
    return r * (linear.fan_in + linear.fan_out)


def training_steps(
    rows: int, batch_size: int, epochs: int, max_steps: int | None, processes: int, accumulation: int = 1
) -> tuple[int, int]:
    """Optimizer steps, and the examples they read (an example read twice counts twice).

    Each process (one per GPU) takes ``batch_size`` examples a batch, and a step
    sums ``accumulation`` batches; as the Trainer counts, an epoch's last step
    may take fewer batches, and its last batch fewer examples.
    """
    per_batch = batch_size * max(processes, 1)
    batches = math.ceil(rows / per_batch)
    per_epoch = max(math.ceil(batches / accumulation), 1)
    if max_steps is not None:
        whole, rest = divmod(max_steps, per_epoch)
        return max_steps, whole * rows + min(rest * per_batch * accumulation, rows)
    return per_epoch * epochs, rows * epochs


def prompt_method_params(
    shape: Shape, method: PrefixTuningMethod | PTuningMethod | PromptTuningMethod | Ia3Method
) -> int:
    """Trainable parameters of the methods that add virtual tokens or scaling vectors, as peft builds them."""
    h, n = shape.hidden, getattr(method, "num_virtual_tokens", 0)
    if isinstance(method, PromptTuningMethod):
        return n * h  # one embedding per virtual token
    if isinstance(method, PrefixTuningMethod):
        # A key and a value vector per layer, of the key/value width (narrower under grouped-query attention).
        kv = shape.kv_dim
        per_token = shape.layers * 2 * kv
        if not method.projection:
            return n * per_token
        e = method.encoder_hidden_size  # embedding, then Linear(kv, e), tanh, Linear(e, per_token)
        return n * kv + (kv * e + e) + (e * per_token + per_token)
    if isinstance(method, PTuningMethod):
        e = method.encoder_hidden_size  # embedding, then an MLP h -> e -> e -> h
        return n * h + (h * e + e) + (e * e + e) + (e * h + h)
    # IA3 on the defaults: a vector on each layer's k and v outputs and on the down projection's input.
    return shape.layers * (2 * shape.kv_dim + shape.intermediate)


def activation_bytes(
    shape: Shape, targets: list[Linear], method: object, *, tokens: int, on_gpu: bool
) -> int:
    """What the forward pass keeps for the backward one, at the longest batch (batch × max_seq_length).

    Per token and layer, with attention that never materializes the s × s
    score matrix (sdpa or flash attention, the engine's defaults):
        two norm inputs and outputs: 4·h
        q, k, v after rotary and the attention output: 2·q_dim + 2·kv_dim
        gated MLP: gate, up, the activation and its product: 4·i
    values, 2 bytes each under bf16 autocast (4 on the CPU, in float32). LoRA
    keeps a dropped-out input (fan_in) and the low-rank product (r) for each
    adapter. The logits are kept in float32 with their gradient: 2 · V · 4 bytes
    a token, which for a large vocabulary is most of it.
    """
    value = 2 if on_gpu else 4
    per_layer = 4 * shape.hidden + 2 * shape.q_dim + 2 * shape.kv_dim + 4 * shape.intermediate
    per_token = shape.layers * per_layer * value
    if isinstance(method, LoraMethod):
        per_token += sum(linear.fan_in + method.r for linear in targets) * value
    per_token += 2 * shape.vocab * 4
    return tokens * per_token
