"""The contract between the control plane and the workers.

Everything a worker needs to run one job travels as a ``JobSpec``; everything
it says back travels as one of the event models below. These models are frozen,
reject unknown fields and carry a schema version, so a control plane and a
worker of different releases fail loudly instead of silently dropping a field.

The control plane validates a user's ``TrainingConfig`` at the API edge with
these same models: a bad config is a 400 there, never a crash on a GPU host.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

SCHEMA_VERSION: Final = 1

QUEUE_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"

# Redis keeps one list per priority band of a queue, and a worker takes from
# band 0 first. The control plane (sender) and the workers must use the same bands.
BROKER_PRIORITY_OPTIONS = {"priority_steps": list(range(10)), "sep": ":"}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class JobKind(StrEnum):
    FINETUNE = "finetune"
    # One job that runs a whole Ray Tune sweep (its JobSpec carries ``sweep``).
    SWEEP_DRIVER = "sweep-driver"
    # Scores a model (a base model, or a finetune's adapter or model) on a dataset; trains nothing.
    EVALUATE = "evaluate"


class DatasetSchema(StrEnum):
    """The row schema of a dataset version: its normalized Parquet columns, the one list of them.

    The control plane detects and stores it at ingest; a job's spec carries it,
    and the engine reads the rows by it.
    """

    TEXT = "text"  # text
    INSTRUCTION = "instruction"  # instruction, input, output
    CHAT = "chat"  # messages: [{role, content}, ...]
    PREFERENCE = "preference"  # prompt, chosen, rejected
    MULTIPLE_CHOICE = "multiple_choice"  # question, choices, answer


# --- training methods: one class per method, told apart by ``name`` ---------

_MODULE_NAME = r"[A-Za-z_][A-Za-z0-9_.]*"


def _module_names_check(value: list[str] | None) -> list[str] | None:
    # Module names end up in peft's regex matching; anything else is a typo or an attack.
    for module in value or []:
        if not re.fullmatch(_MODULE_NAME, module):
            raise ValueError(f"{module!r} is not a module name")
    return value


class _Method(_Frozen):
    """What every training method says of itself, as class traits (PEFT's way): adding a
    method means writing its class, not editing name lists elsewhere."""

    # Its adapter changes weights, so it can be folded into them for export.
    mergeable: ClassVar[bool] = False
    # DPO can run it as the policy and switch it off (or copy the base) for the reference.
    trains_with_dpo: ClassVar[bool] = False
    # It loads the base model quantized (bitsandbytes): a CUDA GPU, no sharded weights.
    quantized: ClassVar[bool] = False
    # It trains virtual tokens before the input (the base model's layers are untouched).
    prompt_learning: ClassVar[bool] = False
    # What a person reads in an error naming it.
    title: ClassVar[str] = ""


class LoraMethod(_Method):
    """Low-rank adapters on the attention (or the given) projections."""

    mergeable = True
    trains_with_dpo = True
    title = "LoRA"

    name: Literal["lora"] = "lora"
    r: int = Field(default=8, ge=1, le=512, description="adapter rank")
    alpha: int = Field(default=16, ge=1, le=4096, description="scaling numerator (alpha / r)")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    # None means the per-architecture default chosen by peft.
    target_modules: list[str] | None = Field(default=None, min_length=1)

    _module_names = field_validator("target_modules")(_module_names_check)


class QLoraMethod(LoraMethod):
    """LoRA on a base model loaded in 4-bit NF4 (bitsandbytes): a large model on a small GPU.

    Needs a CUDA GPU; ``TrainingConfig`` refuses it for a job with no GPUs.
    """

    # Its base is 4-bit: an adapter folded into it would be 4-bit too.
    mergeable = False
    quantized = True
    title = "QLoRA (4-bit bitsandbytes)"

    # A QLoRA job is a LoRA job (isinstance checks rely on it), told apart by its own tag; the model
    # is frozen, so narrowing the tag is safe, but mypy sees pydantic fields as writable.
    name: Literal["qlora"] = "qlora"  # type: ignore[assignment]
    # Quantizing the quantization constants too saves ~0.4 bit per weight at no accuracy cost.
    double_quant: bool = True


class FullMethod(_Method):
    """Every weight of the base model is trained."""

    trains_with_dpo = True  # the reference is a frozen copy of the base
    title = "full fine-tuning"

    name: Literal["full"] = "full"


class PrefixTuningMethod(_Method):
    """Trained key/value prefixes in every attention layer; the base model stays frozen.

    With ``projection`` the prefixes come out of a small MLP (reparameterization),
    which is P-tuning v2's "deep prompt" setup and trains more stably.
    """

    prompt_learning = True
    title = "prefix tuning"

    name: Literal["prefix_tuning"] = "prefix_tuning"
    num_virtual_tokens: int = Field(default=20, ge=1, le=1024)
    projection: bool = False
    # Hidden size of that MLP; used only with projection.
    encoder_hidden_size: int = Field(default=512, ge=1, le=65_536)


class PTuningMethod(_Method):
    """P-tuning: virtual input tokens produced by a trained prompt encoder (peft's ``PromptEncoder``).

    The prompts enter at the input layer only; for prompts in every layer
    (P-tuning v2) use ``prefix_tuning`` with ``projection``.
    """

    prompt_learning = True
    title = "P-tuning"

    name: Literal["p_tuning"] = "p_tuning"
    num_virtual_tokens: int = Field(default=20, ge=1, le=1024)
    encoder_hidden_size: int = Field(default=128, ge=1, le=65_536)
    encoder_type: Literal["mlp", "lstm"] = "mlp"


class PromptTuningMethod(_Method):
    """Soft prompt tuning: trained embeddings of a few virtual tokens put before every input."""

    prompt_learning = True
    title = "prompt tuning"

    name: Literal["prompt_tuning"] = "prompt_tuning"
    num_virtual_tokens: int = Field(default=20, ge=1, le=1024)
    # Starting the soft prompt from a real text's embeddings converges faster than random.
    init_text: str | None = Field(default=None, min_length=1, max_length=2000)


class Ia3Method(_Method):
    """IA3: learned rescaling vectors on keys, values and the feed-forward layers."""

    mergeable = True
    title = "IA3"

    name: Literal["ia3"] = "ia3"
    # None means peft's per-architecture defaults for both lists.
    target_modules: list[str] | None = Field(default=None, min_length=1)
    # Must be a subset of target_modules: the modules whose input (not output) is scaled.
    feedforward_modules: list[str] | None = Field(default=None, min_length=1)

    _module_names = field_validator("target_modules", "feedforward_modules")(_module_names_check)

    @model_validator(mode="after")
    def _feedforward_is_targeted(self) -> Ia3Method:
        if self.feedforward_modules is not None:
            if self.target_modules is None:
                raise ValueError("feedforward_modules needs target_modules too")
            missing = set(self.feedforward_modules) - set(self.target_modules)
            if missing:
                raise ValueError(f"feedforward_modules not in target_modules: {', '.join(sorted(missing))}")
        return self


METHOD_CLASSES: tuple[type[_Method], ...] = (
    LoraMethod,
    QLoraMethod,
    FullMethod,
    PrefixTuningMethod,
    PTuningMethod,
    PromptTuningMethod,
    Ia3Method,
)
Method = Annotated[
    LoraMethod
    | QLoraMethod
    | FullMethod
    | PrefixTuningMethod
    | PTuningMethod
    | PromptTuningMethod
    | Ia3Method,
    Field(discriminator="name"),
]


def method_names(trait: str) -> list[str]:
    """The names of the methods that have ``trait`` (for messages that list them)."""
    return [cls.model_fields["name"].default for cls in METHOD_CLASSES if getattr(cls, trait)]


# --- objectives: what the training optimizes --------------------------------


class SftObjective(_Frozen):
    """Supervised fine-tuning: next-token loss on the texts, instructions or chats."""

    # Whether it trains on prompt/chosen/rejected rows (a preference dataset) rather than texts.
    preference_data: ClassVar[bool] = False

    name: Literal["sft"] = "sft"


class DpoLossType(StrEnum):
    SIGMOID = "sigmoid"  # the DPO paper's loss
    IPO = "ipo"
    HINGE = "hinge"
    ROBUST = "robust"


class DpoObjective(_Frozen):
    """Direct preference optimization on prompt/chosen/rejected rows (with trl).

    The reference model is the base model: for an adapter method the same
    weights with the adapter switched off, for full fine-tuning a frozen copy.
    """

    preference_data: ClassVar[bool] = True

    name: Literal["dpo"] = "dpo"
    beta: float = Field(
        default=0.1, gt=0.0, le=100.0, description="how far the policy may move from the reference"
    )
    loss_type: DpoLossType = DpoLossType.SIGMOID


Objective = Annotated[SftObjective | DpoObjective, Field(discriminator="name")]


# --- hyperparameters ------------------------------------------------------------


class Optimizer(StrEnum):
    ADAMW_TORCH = "adamw_torch"
    ADAMW_TORCH_FUSED = "adamw_torch_fused"
    ADAFACTOR = "adafactor"
    SGD = "sgd"
    ADAGRAD = "adagrad"
    RMSPROP = "rmsprop"
    ADAMW_8BIT = "adamw_bnb_8bit"  # bitsandbytes, GPU only
    PAGED_ADAMW_8BIT = "paged_adamw_8bit"  # bitsandbytes, GPU only; QLoRA's usual choice


# bitsandbytes' optimizers run on CUDA only (torch's fused AdamW runs on the CPU too).
GPU_ONLY_OPTIMIZERS = (Optimizer.ADAMW_8BIT, Optimizer.PAGED_ADAMW_8BIT)


class Scheduler(StrEnum):
    LINEAR = "linear"
    COSINE = "cosine"
    CONSTANT = "constant"
    CONSTANT_WITH_WARMUP = "constant_with_warmup"
    POLYNOMIAL = "polynomial"


class MixedPrecision(StrEnum):
    AUTO = "auto"  # bf16 on a GPU that has it, else fp16 on a GPU, fp32 on the CPU
    NO = "no"  # fp32 throughout
    BF16 = "bf16"
    FP16 = "fp16"  # CUDA only


class Hyperparameters(_Frozen):
    learning_rate: float = Field(default=2e-4, gt=0.0, le=1.0)
    epochs: int = Field(default=1, ge=1, le=1000)
    # When set, overrides epochs: training stops after this many optimizer steps.
    max_steps: int | None = Field(default=None, ge=1, le=10_000_000)
    batch_size: int = Field(default=8, ge=1, le=4096)
    max_seq_length: int = Field(default=256, ge=8, le=131_072)
    seed: int = Field(default=42, ge=0, le=2**32 - 1)
    # A resumable checkpoint (weights, optimizer, scheduler, data position) goes
    # to the artifact store this often; a retried attempt continues from the
    # last one instead of from step 0. None: no checkpoints.
    checkpoint_every_steps: int | None = Field(default=500, ge=1, le=10_000_000)
    # Loss only on what the model should learn to write (responses, assistant
    # turns), not on the prompt it is given. Plain text rows train on every token.
    completion_only_loss: bool = True
    # An optimizer step sees batch_size * gradient_accumulation_steps rows.
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=1024)
    # Recomputes activations in the backward pass: less memory, ~30% slower.
    gradient_checkpointing: bool = False
    # The Trainer's own default, so jobs stored before this option train as they did.
    optimizer: Optimizer = Optimizer.ADAMW_TORCH_FUSED
    scheduler: Scheduler = Scheduler.LINEAR
    # At most one of the two; both zero: no warmup.
    warmup_steps: int = Field(default=0, ge=0, le=10_000_000)
    warmup_ratio: float = Field(default=0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    max_grad_norm: float = Field(default=1.0, gt=0.0, le=1000.0)
    # This fraction of the rows is held out (chosen with the seed) and
    # evaluated every eval_every_steps steps; both or neither.
    validation_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    eval_every_steps: int | None = Field(default=None, ge=1, le=10_000_000)
    # Stop when the metric has not improved over this many evaluations in a row.
    early_stopping_patience: int | None = Field(default=None, ge=1, le=1000)
    early_stopping_metric: str = Field(default="eval_loss", pattern=r"^eval_[a-z0-9_]{1,60}$")
    early_stopping_greater_is_better: bool = False
    mixed_precision: MixedPrecision = MixedPrecision.AUTO
    # Halve the batch size and retry when a step runs out of GPU memory.
    auto_find_batch_size: bool = False

    # "auto": pack each batch's examples into rows with next to no padding where
    # the model keeps packed examples apart (the same loss, less compute), else
    # draw batches of similar lengths (the same loss in expectation). "off":
    # padded batches drawn at random.
    packing: Literal["auto", "off"] = "auto"

    @model_validator(mode="after")
    def _options_agree(self) -> Hyperparameters:
        if self.warmup_steps and self.warmup_ratio:
            raise ValueError("give warmup_steps or warmup_ratio, not both")
        if self.eval_every_steps is not None and self.validation_fraction == 0:
            # Held-out rows alone are evaluated once, at the end.
            raise ValueError("eval_every_steps evaluates held-out rows: set validation_fraction too")
        if self.early_stopping_patience is not None and self.eval_every_steps is None:
            raise ValueError("early_stopping_patience needs evaluations: set eval_every_steps")
        return self


# --- distributed training: how a job spreads over its GPUs ---------------------


class DdpStrategy(_Frozen):
    """Distributed data parallel: every process holds the whole model and trains on its
    share of each batch; gradients are averaged after every backward pass."""

    # Whether it splits weights, gradients or optimizer state across the processes: the job
    # then trains under torchrun even in one process, and saving gathers from every rank.
    sharded: ClassVar[bool] = False
    # Whether it runs only on CUDA GPUs, and the package a worker needs for it ("": none).
    needs_gpus: ClassVar[bool] = False
    package: ClassVar[str] = ""

    name: Literal["ddp"] = "ddp"

    @property
    def title(self) -> str:
        return "DDP"


class FsdpStrategy(_Frozen):
    """Fully sharded data parallel (torch FSDP, full shard): weights, gradients and optimizer
    state are split across the processes and each layer is gathered whole only while it
    computes, so a model too large for one GPU trains on several."""

    sharded: ClassVar[bool] = True
    needs_gpus: ClassVar[bool] = False
    package: ClassVar[str] = ""

    name: Literal["fsdp"] = "fsdp"

    @property
    def title(self) -> str:
        return "FSDP"

    # Sharded weights and gradients wait in host memory between uses: a larger model, slower steps.
    cpu_offload: bool = False


class DeepSpeedStrategy(_Frozen):
    """DeepSpeed ZeRO: stage 1 shards the optimizer state, 2 the gradients too, 3 the weights too.

    Needs the ``deepspeed`` package on the worker and CUDA GPUs; a worker without
    it fails the job as a bad input, with that reason.
    """

    sharded: ClassVar[bool] = True
    needs_gpus: ClassVar[bool] = True
    package: ClassVar[str] = "deepspeed"

    name: Literal["deepspeed"] = "deepspeed"
    stage: Literal[1, 2, 3] = 2

    @property
    def title(self) -> str:
        return f"DeepSpeed ZeRO stage {self.stage}"

    # The optimizer state (and at stage 3 the weights) in host memory.
    cpu_offload: bool = False


Strategy = Annotated[DdpStrategy | FsdpStrategy | DeepSpeedStrategy, Field(discriminator="name")]


class Resources(_Frozen):
    """What a job takes from its worker, and how its training spreads over it.

    A job with several GPUs runs one training process per GPU on one host
    (launched with torchrun), each with ``batch_size`` examples per step, so
    an optimizer step sees ``batch_size * processes * gradient_accumulation_steps``
    examples. ``cpu_processes`` asks for that many processes on the CPU (the
    gloo backend) for a job without GPUs: a multi-core CPU host's way to train
    data-parallel, and the way to try a multi-process job where there is no
    GPU. It is part of the config rather than a worker setting because it
    changes the effective batch, and so the training: the same job must train
    the same way on whichever worker takes it.
    """

    gpus: int = Field(default=0, ge=0, le=64)
    cpu_processes: int = Field(default=1, ge=1, le=64)
    # How several processes share the work; the default replicates the model (DDP).
    distributed: Strategy = Field(default_factory=DdpStrategy)
    # The Celery queue; by default "gpu" for GPU jobs and "cpu" otherwise.
    queue: str | None = Field(default=None, pattern=QUEUE_PATTERN)
    # Wall-clock limit of one attempt; past it the worker kills the trainer and
    # the job fails with that reason (a timeout is not retried).
    timeout_seconds: int | None = Field(default=None, ge=1, le=30 * 24 * 3600)

    @model_validator(mode="after")
    def _processes_fit(self) -> Resources:
        if self.gpus and self.cpu_processes > 1:
            raise ValueError("a GPU job runs one process per GPU: cpu_processes is for jobs without GPUs")
        if not self.gpus and self.distributed.needs_gpus:
            raise ValueError("DeepSpeed needs CUDA GPUs: set resources.gpus to 1 or more")
        if not self.gpus and isinstance(self.distributed, FsdpStrategy) and self.distributed.cpu_offload:
            raise ValueError("cpu_offload frees GPU memory, and a job without GPUs has none: leave it out")
        if (
            isinstance(self.distributed, FsdpStrategy)
            and self.processes == 1
            and not self.distributed.cpu_offload
        ):
            raise ValueError("FSDP shards the model across processes: give it 2 or more, or cpu_offload")
        return self

    @property
    def processes(self) -> int:
        """How many training processes the job runs (the world size)."""
        return self.gpus or self.cpu_processes

    @property
    def launched(self) -> bool:
        """Whether the job trains under torchrun: several processes, or a sharding strategy."""
        return self.processes > 1 or self.distributed.sharded

    @property
    def queue_name(self) -> str:
        if self.queue:
            return self.queue
        return "gpu" if self.gpus > 0 else "cpu"


# --- evaluation: what the end of training computes on held-out rows -----------


class EvaluationMetric(StrEnum):
    PERPLEXITY = "perplexity"  # on validation texts
    BLEU = "bleu"  # generation against references
    ROUGE = "rouge"  # ROUGE-1, ROUGE-2 and ROUGE-L of generation against references
    EXACT_MATCH = "exact_match"  # generation against references
    MULTIPLE_CHOICE = "multiple_choice"  # accuracy by log-likelihood
    ANSWER_ACCURACY = "answer_accuracy"  # the answer extracted from a generation against the reference's


class AnswerExtraction(StrEnum):
    """Where in a generation the answer is (``AnswerConfig``)."""

    WHOLE = "whole"  # the whole generation is the answer
    REGEX = "regex"  # the one group of the first match of ``pattern``
    LAST_NUMBER = "last_number"  # the last number written, GSM8K style ("... the answer is 42")
    CHOICE_LETTER = "choice_letter"  # a standalone letter A, B, C... ("The answer is (B)")


class AnswerComparison(StrEnum):
    EXACT = "exact"  # equal after normalization (whitespace, and case with exact_match_ignore_case)
    NUMERIC = "numeric"  # both read as numbers, at most ``tolerance`` apart


class SpecialTokens(StrEnum):
    """How texts scored by likelihood (multiple choice, perplexity) are tokenized.

    ``tokenizer``: with the tokenizer's own special tokens (a Llama-style BOS),
    as lm-evaluation-harness does since 0.4.9.2. ``none``: without them, as
    lm-evaluation-harness does with ``add_bos_token=False`` (Tuneyard's scoring before).
    """

    TOKENIZER = "tokenizer"
    NONE = "none"


# A pattern runs on every generation: short, so it can be read, and timed out on the worker.
ANSWER_PATTERN_MAX_CHARS = 200


class AnswerConfig(_Frozen):
    """How ``answer_accuracy`` reads the answer out of a generation and compares it with the reference.

    The reference goes through the same extraction, falling back to the whole
    reference where it finds nothing, so both "42" and GSM8K's "...\n#### 42" are the answer 42.
    """

    extraction: AnswerExtraction = AnswerExtraction.WHOLE
    pattern: str | None = Field(default=None, min_length=1, max_length=ANSWER_PATTERN_MAX_CHARS)
    comparison: AnswerComparison = AnswerComparison.EXACT
    # Absolute: 0 asks for the same number (1,000 and 1000.0 are the same).
    tolerance: float = Field(default=0.0, ge=0, le=1e12, allow_inf_nan=False)
    # choice_letter: how many letters are choices (4: A to D).
    choice_count: int = Field(default=4, ge=2, le=26)

    @model_validator(mode="after")
    def _pattern_fits(self) -> AnswerConfig:
        if (self.extraction is AnswerExtraction.REGEX) != (self.pattern is not None):
            raise ValueError("a 'pattern' is given with extraction 'regex', and only then")
        if self.pattern is not None:
            try:
                compiled = re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"the pattern is not a regular expression: {exc}") from None
            if compiled.groups != 1:
                raise ValueError(
                    f"the pattern must have exactly one group, the answer, e.g. 'answer is (\\S+)'; "
                    f"it has {compiled.groups}"
                )
        if self.tolerance and self.comparison is not AnswerComparison.NUMERIC:
            raise ValueError("a 'tolerance' is for comparison 'numeric'")
        return self


class EvaluationConfig(_Frozen):
    """Which metrics an evaluation computes and how; the data it runs on travels beside it."""

    metrics: list[EvaluationMetric] = Field(
        default_factory=lambda: [EvaluationMetric.PERPLEXITY], min_length=1, max_length=len(EvaluationMetric)
    )
    batch_size: int = Field(default=8, ge=1, le=4096)
    # Validation texts are cut as training cuts them, so perplexity and training loss compare.
    max_seq_length: int = Field(default=256, ge=8, le=131_072)
    # Generation is greedy and stops at end-of-sequence or after this many tokens.
    max_new_tokens: int = Field(default=64, ge=1, le=4096)
    exact_match_ignore_case: bool = False
    rouge_use_stemmer: bool = False
    num_fewshot: int = Field(default=0, ge=0, le=64)
    # lm-evaluation-harness's default few-shot seed, so that its k-shot prompts and ours agree.
    seed: int = Field(default=1234, ge=0, le=2**32 - 1)
    # Likelihood scoring's tokenization; the results' params say which was used.
    special_tokens: SpecialTokens = SpecialTokens.TOKENIZER
    # answer_accuracy's extraction and comparison (the whole answer, exactly, when left out).
    answer: AnswerConfig | None = None

    @field_validator("metrics")
    @classmethod
    def _no_repeats(cls, value: list[EvaluationMetric]) -> list[EvaluationMetric]:
        if len(set(value)) != len(value):
            raise ValueError("a metric is listed twice")
        return value

    @property
    def generates(self) -> bool:
        """Whether any chosen metric scores generated text."""
        return bool(
            {
                EvaluationMetric.BLEU,
                EvaluationMetric.ROUGE,
                EvaluationMetric.EXACT_MATCH,
                EvaluationMetric.ANSWER_ACCURACY,
            }
            & set(self.metrics)
        )

    @property
    def answer_config(self) -> AnswerConfig:
        """How answer_accuracy reads answers: as asked, or the whole answer compared exactly."""
        return self.answer if self.answer is not None else AnswerConfig()

    @model_validator(mode="after")
    def _answer_for_answer_accuracy(self) -> EvaluationConfig:
        if self.answer is not None and EvaluationMetric.ANSWER_ACCURACY not in self.metrics:
            raise ValueError("'answer' configures the answer_accuracy metric: add it to 'metrics'")
        return self


class ExportConfig(_Frozen):
    """What a finished fine-tune saves besides its trained weights."""

    # The adapter folded into a copy of its base, logged as the job's ``model``:
    # a whole model that serves without peft (and the one registered from the job).
    merge_adapter: bool = False


class TrainingConfig(_Frozen):
    """What a person chooses when launching a fine-tune; validated at the API edge."""

    method: Method = Field(default_factory=LoraMethod)
    objective: Objective = Field(default_factory=SftObjective)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    resources: Resources = Field(default_factory=Resources)
    # Metrics computed on the held-out rows (validation_fraction) once training ends.
    evaluation: EvaluationConfig | None = None
    export: ExportConfig | None = None

    @model_validator(mode="after")
    def _method_fits(self) -> TrainingConfig:
        gpu_only = []
        if self.method.quantized:
            gpu_only.append(self.method.title)
        if self.hyperparameters.optimizer in GPU_ONLY_OPTIMIZERS:
            gpu_only.append(f"the {self.hyperparameters.optimizer.value} optimizer")
        if self.hyperparameters.mixed_precision is MixedPrecision.FP16:
            gpu_only.append("fp16 mixed precision")
        if gpu_only and self.resources.gpus == 0:
            raise ValueError(f"{' and '.join(gpu_only)} needs a CUDA GPU: set resources.gpus to 1 or more")
        if self.objective.preference_data and not self.method.trains_with_dpo:
            # DPO runs the model twice per pair (policy and reference); with prompt-learning
            # methods trl cannot switch the reference off cleanly, so they are not offered.
            methods = ", ".join(method_names("trains_with_dpo"))
            raise ValueError(f"DPO works with the methods {methods}, not {self.method.name}")
        merges = self.export is not None and self.export.merge_adapter
        if merges and not self.method.mergeable:
            methods = ", ".join(method_names("mergeable"))
            raise ValueError(f"merge_adapter works with the methods {methods}, not {self.method.name}")
        self._distributed_fits()
        if self.evaluation is not None:
            if self.hyperparameters.validation_fraction == 0:
                raise ValueError("evaluation runs on held-out rows: set hyperparameters.validation_fraction")
            if EvaluationMetric.MULTIPLE_CHOICE in self.evaluation.metrics:
                raise ValueError("multiple_choice is scored on multiple-choice data, not on held-out rows")
        return self

    def _distributed_fits(self) -> None:
        resources, strategy = self.resources, self.resources.distributed
        if resources.processes > 1 and self.hyperparameters.auto_find_batch_size:
            # Each process would halve its batch on its own out-of-memory, and the processes,
            # stepping together, would then wait on each other forever.
            raise ValueError("auto_find_batch_size works with one process: set batch_size instead")
        sharded_weights = isinstance(strategy, FsdpStrategy) or (
            isinstance(strategy, DeepSpeedStrategy) and strategy.stage == 3
        )
        if sharded_weights and self.method.quantized:
            raise ValueError(f"QLoRA's 4-bit weights cannot be sharded by {strategy.title}: use ddp")
        if sharded_weights and self.evaluation is not None:
            # The suite generates with one whole copy of the model, on one process.
            title = strategy.title
            raise ValueError(
                f"the held-out evaluation needs the whole model in one process, which {title} does not "
                "keep: use ddp or leave evaluation out"
            )


class EvaluateConfig(_Frozen):
    """What a person chooses when launching an evaluate job; validated at the API edge.

    Which metrics fit which dataset schema is the control plane's check, since
    only it knows the schema (``controlplane.training.services``).
    """

    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    resources: Resources = Field(default_factory=Resources)

    @model_validator(mode="after")
    def _one_process(self) -> EvaluateConfig:
        # The model is scored in one process on one device: more GPUs would be
        # held (and counted in the quota) for nothing.
        if self.resources.launched or self.resources.gpus > 1:
            raise ValueError(
                "an evaluation runs in one process on at most one GPU: "
                "leave out cpu_processes and distributed, and ask for gpus 0 or 1"
            )
        return self


# --- LLM-as-judge: an evaluate job whose model judges pairs of answers ---------

JUDGE_RUBRIC_MAX_CHARS = 4000
# A pair's texts come from evaluated rows (whose answers a run's table clips to 2000 characters).
JUDGE_TEXT_MAX_CHARS = 20_000
JUDGE_PAIRS_MAX = 2000


class JudgeVerdict(StrEnum):
    """A judge's verdict on one pair, after reading it in both orders."""

    CHALLENGER = "challenger"  # preferred in both orders
    CHAMPION = "champion"  # dispreferred in both orders
    TIE = "tie"  # the two orders disagree: the judge followed the position, not the answers

    @property
    def score(self) -> float:
        """The challenger's share of the pair: a win 1, a tie 0.5, a loss 0."""
        return {JudgeVerdict.CHALLENGER: 1.0, JudgeVerdict.TIE: 0.5, JudgeVerdict.CHAMPION: 0.0}[self]


JudgeText = Annotated[str, StringConstraints(max_length=JUDGE_TEXT_MAX_CHARS)]


class JudgePair(_Frozen):
    """One line of a judge job's input (JSONL): a prompt of an evaluated row and two answers to it.

    ``answer_a`` is the challenger's, ``answer_b`` the champion's; the judge sees
    them under labels of its own, in both orders.
    """

    row: int = Field(ge=0, le=2**31 - 1)  # the evaluated row the prompt came from
    prompt: Annotated[str, StringConstraints(min_length=1, max_length=JUDGE_TEXT_MAX_CHARS)]
    answer_a: JudgeText
    answer_b: JudgeText


class JudgeConfig(_Frozen):
    """How a judge job judges: its rubric, and how it batches and bounds its prompts.

    The pairs it judges are the job's input (``JobSpec.dataset_uris``, one JSONL of ``JudgePair``).
    """

    rubric: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=JUDGE_RUBRIC_MAX_CHARS)
    ]
    batch_size: int = Field(default=8, ge=1, le=1024)
    # A prompt longer than this (or than the judge's context window) has its answers cut.
    max_prompt_tokens: int = Field(default=2048, ge=128, le=131_072)


class JudgeJobConfig(_Frozen):
    """A judge job's stored config (``Job.config``); launched by the control plane, not by a person."""

    judge: JudgeConfig
    resources: Resources = Field(default_factory=Resources)

    @model_validator(mode="after")
    def _one_process(self) -> JudgeJobConfig:
        # As an evaluation: one process, on at most one GPU.
        if self.resources.launched or self.resources.gpus > 1:
            raise ValueError("a judge runs in one process on at most one GPU")
        return self


class TrainedArtifactKind(StrEnum):
    ADAPTER = "adapter"  # peft weights, loaded on top of the base model
    MODEL = "model"  # a whole model (full fine-tuning), loaded in place of the base model


class TrainedArtifact(_Frozen):
    """A finetune job's output, as its result named it (``JobResult.artifacts``)."""

    kind: TrainedArtifactKind
    uri: Annotated[str, StringConstraints(min_length=1, max_length=2000)]


# How a sweep optimizes its objective, in Optuna's (and Ray Tune's) words.
SweepDirection = Literal["minimize", "maximize"]
# The Optuna samplers a Ray sweep searches with.
RaySampler = Literal["tpe", "random"]
# "asha" stops unpromising trials early; "fifo" lets every trial run to its end.
RayScheduler = Literal["asha", "fifo"]


class RaySweep(_Frozen):
    """What a sweep-driver job runs: Ray Tune over ``search_space`` (a validated
    ``workers.sweep_space.SearchSpace``), each trial training the job's config with
    the sampled parameters set, as an ordinary finetune would."""

    search_space: dict[str, dict[str, object]] = Field(min_length=1, max_length=50)
    objective_metric: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    # The per-step metric ASHA compares trials by (the engine reports it at every step).
    intermediate_metric: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    direction: SweepDirection
    sampler: RaySampler
    scheduler: RayScheduler
    # Trials still to run (a later attempt runs only what earlier ones left), numbered from here on.
    n_trials: int = Field(ge=0, le=10_000)
    first_trial_number: int = Field(default=0, ge=0, le=2**31 - 1)
    max_concurrent_trials: int = Field(ge=1, le=100)
    seed: int = Field(ge=0, le=2**31 - 1)


class JobSpec(_Frozen):
    """All a worker needs to run one attempt of one job, and nothing that needs the database."""

    schema_version: Literal[1] = SCHEMA_VERSION
    job_id: int = Field(ge=1)
    attempt: int = Field(ge=1)
    kind: JobKind = JobKind.FINETUNE
    project: str
    base_model_uri: str = Field(min_length=1)
    # Allowed by a site admin for this base model only: its repository's Python runs here.
    trust_remote_code: bool = False
    dataset_uris: list[str] = Field(min_length=1)
    # The schema of the dataset versions at ``dataset_uris`` (a local JSONL file has instruction rows).
    dataset_format: DatasetSchema = DatasetSchema.INSTRUCTION
    # For an evaluate job only its resources count; the rest keeps its defaults.
    config: TrainingConfig
    mlflow_experiment: str = Field(min_length=1)
    mlflow_run_id: str | None = None
    resume_checkpoint_uri: str | None = None
    sweep: RaySweep | None = None
    # An evaluate job's metrics, the trained weights it scores (none: the base
    # model as it is) and where its few-shot examples come from (none: the
    # evaluated rows themselves, each example never shown its own answer).
    evaluation: EvaluationConfig | None = None
    trained_artifact: TrainedArtifact | None = None
    fewshot_dataset_uri: str | None = Field(default=None, min_length=1)
    # An evaluate job that judges the pairs at ``dataset_uris`` instead of scoring metrics.
    judge: JudgeConfig | None = None
    # The attempt's MLflow run, as people find it there: named after the job, and tagged
    # beyond its id and project with what only the control plane knows (its creator as
    # ``mlflow.user``, its dataset version and base model, the job page's address).
    run_name: str = Field(default="", max_length=250)
    run_tags: dict[
        Annotated[str, StringConstraints(min_length=1, max_length=250)],
        Annotated[str, StringConstraints(max_length=5000)],
    ] = Field(default_factory=dict, max_length=20)

    @model_validator(mode="after")
    def _sweep_matches_kind(self) -> JobSpec:
        if (self.kind is JobKind.SWEEP_DRIVER) != (self.sweep is not None):
            raise ValueError("a sweep-driver job, and only one, carries 'sweep'")
        if self.kind is JobKind.SWEEP_DRIVER and self.config.resources.launched:
            # Ray Tune runs each trial in one actor process.
            raise ValueError(
                "a Ray Tune sweep's trials train in one process each: leave out cpu_processes "
                "and distributed, and ask for at most 1 GPU per trial"
            )
        # An evaluate job scores metrics ('evaluation') or judges pairs ('judge'): exactly one of them.
        carried = (self.evaluation is not None) + (self.judge is not None)
        if carried != (1 if self.kind is JobKind.EVALUATE else 0):
            raise ValueError("an evaluate job, and only one, carries 'evaluation' or else 'judge'")
        if self.kind is not JobKind.EVALUATE and (self.trained_artifact or self.fewshot_dataset_uri):
            raise ValueError("only an evaluate job carries 'trained_artifact' or 'fewshot_dataset_uri'")
        return self

    @property
    def queue(self) -> str:
        return self.config.resources.queue_name


# --- job events: what a worker reports back over the internal API ------------


class GpuState(_Frozen):
    index: int = Field(ge=0)
    name: str = Field(max_length=200)
    memory_total_mb: int | None = Field(default=None, ge=0)
    memory_used_mb: int | None = Field(default=None, ge=0)
    utilization_percent: int | None = Field(default=None, ge=0, le=100)


class WorkerHeartbeat(_Frozen):
    """A worker says it is alive, what it serves and what it runs."""

    name: str = Field(min_length=1, max_length=200)
    host: str = Field(min_length=1, max_length=200)
    queues: list[str] = Field(min_length=1, max_length=50)
    gpus: list[GpuState] = Field(default_factory=list, max_length=64)
    version: str = Field(default="", max_length=50)
    running_job_ids: list[int] = Field(default_factory=list, max_length=64)


class ClaimRequest(_Frozen):
    attempt: int = Field(ge=1)
    worker: str = Field(min_length=1, max_length=200)


# Bounds that match the control plane's columns, so a bad event is a 400, never a database error.
Step = Annotated[int, Field(ge=0, le=2**31 - 1)]
MetricName = Annotated[str, StringConstraints(min_length=1, max_length=100)]
MetricValue = Annotated[float, Field(allow_inf_nan=False)]
RunId = Annotated[str, StringConstraints(max_length=64)]
LOG_LINE_MAX_CHARS = 2000


class Checkpoint(_Frozen):
    """A checkpoint the trainer finished writing to the artifact store."""

    step: Step
    uri: Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class Heartbeat(_Frozen):
    attempt: int = Field(ge=1)
    worker: str = Field(min_length=1, max_length=200)
    progress: float = Field(default=0.0, ge=0.0, le=1.0)
    step: Step = 0
    total_steps: Step = 0
    # Metric points since the last heartbeat, by name, as (step, value) pairs.
    metrics: dict[MetricName, list[tuple[Step, MetricValue]]] = Field(default_factory=dict, max_length=100)
    mlflow_run_id: RunId | None = None
    # The host's GPU indices this attempt holds (its CUDA_VISIBLE_DEVICES).
    gpu_indices: list[Annotated[int, Field(ge=0, le=1023)]] = Field(default_factory=list, max_length=64)
    log_lines: list[Annotated[str, StringConstraints(max_length=LOG_LINE_MAX_CHARS)]] = Field(
        default_factory=list, max_length=1000
    )
    # The newest checkpoint stored since the last heartbeat, if any.
    checkpoint: Checkpoint | None = None


class HeartbeatReply(_Frozen):
    stop: bool = False
    reason: str = ""


class JobOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobResult(_Frozen):
    attempt: int = Field(ge=1)
    worker: str = Field(min_length=1, max_length=200)
    outcome: JobOutcome
    metrics: dict[MetricName, MetricValue] = Field(default_factory=dict, max_length=100)
    # Artifact name -> URI a machine elsewhere can read ("adapter", "model", "log").
    artifacts: dict[
        Annotated[str, StringConstraints(max_length=100)], Annotated[str, StringConstraints(max_length=2000)]
    ] = Field(default_factory=dict, max_length=20)
    mlflow_run_id: RunId | None = None
    error: str = Field(default="", max_length=20_000)
    # A failure another attempt may not repeat (a crash, a lost server), as opposed
    # to one in the job itself (a bad row, a time limit): the control plane retries it.
    retryable: bool = False

    @model_validator(mode="after")
    def _failure_has_reason(self) -> JobResult:
        if self.outcome is JobOutcome.FAILED and not self.error:
            raise ValueError("a failed job must say why in 'error'")
        return self


class SweepTrialState(StrEnum):
    RUNNING = "running"
    COMPLETE = "complete"
    PRUNED = "pruned"  # stopped early by the sweep's scheduler
    FAILED = "failed"


class SweepTrialReport(_Frozen):
    """A sweep-driver job tells the control plane where one of its trials stands.

    Sent again as the trial goes on, each time whole: applying it twice is harmless,
    and a finished trial is never moved back to running.
    """

    attempt: int = Field(ge=1)
    number: int = Field(ge=0, le=2**31 - 1)
    params: dict[Annotated[str, StringConstraints(max_length=200)], str | int | float | bool] = Field(
        max_length=50
    )
    state: SweepTrialState
    value: MetricValue | None = None
    # The intermediate metric by step, as the scheduler saw it.
    intermediate_values: list[tuple[Step, MetricValue]] = Field(default_factory=list, max_length=100_000)
    mlflow_run_id: RunId | None = None
    error: str = Field(default="", max_length=2000)
