"""Load a base model, apply the training method, train with ``transformers.Trainer``, save.

Knows nothing of MLflow or of the stdout protocol: progress leaves through the
``on_step`` callback and the result is returned, so ``job`` decides where
they go.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from workers.engine import JobInputError
from workers.engine.batching import batching_choose
from workers.engine.data import InstructionRow, format_example, tokenize
from workers.spec import FullMethod, JobSpec, LoraMethod

# (step, total_steps, metrics at that step)
StepListener = Callable[[int, int, Mapping[str, float]], None]
# (step, local directory of the checkpoint the Trainer has just finished writing)
CheckpointListener = Callable[[int, Path], None]

IGNORE_INDEX = -100  # label value the loss skips (padding)


class BaseModelError(JobInputError):
    """The base model cannot be loaded or cannot take the chosen method."""


@dataclass(frozen=True)
class TrainedModel:
    path: Path  # local directory holding the saved weights
    artifact_name: str  # "adapter" (LoRA) or "model" (full)
    steps: int
    metrics: dict[str, float]  # Trainer's final metrics: train_loss, train_runtime, ...


def train(
    spec: JobSpec,
    base_model: Path | str,
    rows: list[InstructionRow],
    workdir: Path,
    on_step: StepListener,
    on_checkpoint: CheckpointListener | None = None,
    resume_from: Path | None = None,
) -> TrainedModel:
    """Train; with ``resume_from`` (a checkpoint directory), continue where it stopped.

    A resumed run restores weights, optimizer, scheduler, RNG states and the
    position in the data, so it continues the same loss curve.
    """
    hyper = spec.config.hyperparameters
    # Seeded before the adapter exists: LoRA's initial weights are random too.
    set_seed(hyper.seed)
    tokenizer, model = _load(base_model, spec.base_model_uri)
    model = _apply_method(model, spec.config.method)
    examples = tokenize([format_example(row) for row in rows], tokenizer, hyper.max_seq_length)
    batching = batching_choose(model, hyper.packing, padded=CausalLMCollator(_pad_id(tokenizer)))
    print(f"tuneyard: batching: {batching.description}", flush=True)
    args = _training_arguments(spec, workdir / "trainer")
    args.train_sampling_strategy = batching.sampling
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=examples,
        data_collator=batching.collator,
        processing_class=tokenizer,
        callbacks=[_StepReporter(on_step), _CheckpointReporter(on_checkpoint)],
    )
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    artifact_name = "adapter" if isinstance(spec.config.method, LoraMethod) else "model"
    saved = _save(model, tokenizer, workdir / artifact_name, spec.base_model_uri)
    metrics = {
        key: float(value)
        for key, value in output.metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    return TrainedModel(saved, artifact_name, output.global_step, metrics)


def _load(base_model: Path | str, uri: str) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    try:
        tokenizer = AutoTokenizer.from_pretrained(base_model, trust_remote_code=False)
        # float32 on CPU (no fast half precision there); on a GPU, bf16 comes
        # from mixed precision in the Trainer, with float32 master weights.
        model = AutoModelForCausalLM.from_pretrained(base_model, trust_remote_code=False, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise BaseModelError(f"cannot load base model {uri!r}: {_first_line(exc)}") from exc
    return tokenizer, model


def _apply_method(model: PreTrainedModel, method: LoraMethod | FullMethod) -> PreTrainedModel:
    if isinstance(method, FullMethod):
        return model
    config = LoraConfig(
        r=method.r,
        lora_alpha=method.alpha,
        lora_dropout=method.dropout,
        # None lets peft pick the usual projections for the architecture.
        target_modules=method.target_modules,
        task_type=TaskType.CAUSAL_LM,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        # e.g. target modules that do not exist, or an architecture peft has no default for
        raise BaseModelError(f"cannot apply LoRA to the base model: {_first_line(exc)}") from exc


def _training_arguments(spec: JobSpec, output_dir: Path) -> TrainingArguments:
    hyper = spec.config.hyperparameters
    on_gpu = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=hyper.batch_size,
        learning_rate=hyper.learning_rate,
        num_train_epochs=hyper.epochs,
        max_steps=hyper.max_steps if hyper.max_steps is not None else -1,
        seed=hyper.seed,
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="steps" if hyper.checkpoint_every_steps else "no",
        save_steps=hyper.checkpoint_every_steps or 500,
        # The artifact store keeps every checkpoint; locally only the newest is needed.
        save_total_limit=1,
        eval_strategy="no",
        report_to="none",
        # Progress bars are noise in forwarded log lines; progress events carry the numbers.
        disable_tqdm=True,
        use_cpu=not on_gpu,
        bf16=on_gpu and torch.cuda.is_bf16_supported(),
        # Worker processes for data loading fail inside a Celery pool child and
        # would only feed tokens already in memory.
        dataloader_num_workers=0,
        # A PeftModel's forward takes **kwargs, so Trainer cannot find "labels" by itself.
        label_names=["labels"],
    )


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    # Many causal LMs ship without a pad token. Any id will do: the collator
    # masks padding by length, so the pad (even when it equals eos) never
    # reaches the loss or the attention.
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return pad if pad is not None else 0


class CausalLMCollator:
    """Right-pads a batch; labels are the input ids, with padding ignored by the loss."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        longest = max(len(feature["input_ids"]) for feature in features)
        shape = (len(features), longest)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros(shape, dtype=torch.long)
        labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
        for row, feature in enumerate(features):
            ids = torch.tensor(feature["input_ids"], dtype=torch.long)
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
            labels[row, : len(ids)] = ids
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class _StepReporter(TrainerCallback):
    """Hands every per-step log (loss, learning rate, grad norm) to ``on_step``."""

    def __init__(self, on_step: StepListener) -> None:
        self.on_step = on_step

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # The end-of-training summary is logged through here too; it has
        # train_loss but no loss, and is returned by train() instead.
        if not logs or "loss" not in logs:
            return
        metrics = {
            key: float(value)
            for key, value in logs.items()
            if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool)
        }
        self.on_step(state.global_step, state.max_steps, metrics)


class _CheckpointReporter(TrainerCallback):
    """Hands every checkpoint the Trainer has finished writing to ``on_checkpoint``."""

    def __init__(self, on_checkpoint: CheckpointListener | None) -> None:
        self.on_checkpoint = on_checkpoint

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # The Trainer also checkpoints the last step; the trained model is saved
        # moments later anyway, so that upload would only cost time.
        if state.global_step >= state.max_steps:
            control.should_save = False

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.on_checkpoint is None:
            return
        # The Trainer calls on_save after the checkpoint directory is complete.
        path = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        self.on_checkpoint(state.global_step, path)


def _save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path, base_uri: str) -> Path:
    """Save weights (safetensors) and tokenizer, so the directory loads on its own."""
    if isinstance(model, PeftModel):
        # Otherwise the adapter would name this machine's download directory as its base.
        for adapter_config in model.peft_config.values():
            adapter_config.base_model_name_or_path = base_uri
        # "auto" would look the base model up by that URI to see whether the
        # vocabulary was resized; it never is here.
        model.save_pretrained(out_dir, save_embedding_layers=False)
    else:
        model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
