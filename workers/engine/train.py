"""Load a base model, apply the training method, train with ``transformers.Trainer``, save.

Knows nothing of MLflow or of the stdout protocol: progress leaves through the
``on_step`` callback and the result is returned, so ``job`` decides where
they go. The methods (LoRA, prefix tuning, ...) live in ``methods``, the
supervised examples in ``sft``, preference optimization in ``dpo``.
"""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from peft import PeftModel
from transformers import (
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from workers.engine import JobInputError, distributed
from workers.engine.batching import SeededLengthGroupedSampler, batching_choose
from workers.engine.data import DatasetError, TrainingRow
from workers.engine.methods import BaseModelError, method_apply, model_load
from workers.engine.sft import IGNORE_INDEX, sft_examples
from workers.spec import (
    GPU_ONLY_OPTIMIZERS,
    DeepSpeedStrategy,
    DpoObjective,
    FsdpStrategy,
    Hyperparameters,
    JobSpec,
    MixedPrecision,
    Optimizer,
)

if TYPE_CHECKING:
    from workers.engine.methods import Model

# (step, total_steps, metrics at that step)
StepListener = Callable[[int, int, Mapping[str, float]], None]
# (step, local directory of the checkpoint the Trainer has just finished writing)
CheckpointListener = Callable[[int, Path], None]

__all__ = ["BaseModelError", "TrainedModel", "train"]


@dataclass(frozen=True)
class TrainedModel:
    path: Path  # local directory holding the saved weights
    artifact_name: str  # "adapter" (peft methods) or "model" (full)
    steps: int
    metrics: dict[str, float]  # Trainer's final metrics: train_loss, train_runtime, ...


def train(
    spec: JobSpec,
    base_model: Path | str,
    rows: Sequence[TrainingRow],
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
    # Seeded before the adapter exists: adapter weights start random too.
    set_seed(hyper.seed)
    method = spec.config.method
    model: Model
    tokenizer, model = model_load(
        base_model, spec.base_model_uri, method, trust_remote_code=spec.trust_remote_code
    )
    model = method_apply(
        model, method, base_model=base_model, gradient_checkpointing=hyper.gradient_checkpointing
    )
    train_rows, eval_rows = validation_split(rows, hyper)
    options = training_options(spec, workdir / "trainer")
    callbacks: list[TrainerCallback] = [_StepReporter(on_step), _CheckpointReporter(on_checkpoint)]
    if hyper.early_stopping_patience is not None:
        callbacks.append(
            EarlyStopping(
                hyper.early_stopping_metric,
                hyper.early_stopping_patience,
                hyper.early_stopping_greater_is_better,
            )
        )
    objective = spec.config.objective
    trainer: Trainer
    if isinstance(objective, DpoObjective):
        # trl is imported only for DPO jobs: it takes seconds to import.
        from workers.engine.dpo import dpo_trainer

        trainer = dpo_trainer(model, tokenizer, objective, options, hyper, train_rows, eval_rows, callbacks)
    else:
        trainer = _sft_trainer(
            model, tokenizer, TrainingArguments(**options), hyper, train_rows, eval_rows, callbacks
        )
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    final = dict(output.metrics)
    if eval_rows:
        # The final model's validation metrics (eval_loss ...), which a sweep may optimize:
        # those of an evaluation at the last step, or of one made now.
        last = next((entry for entry in reversed(trainer.state.log_history) if "eval_loss" in entry), {})
        if last.get("step") == output.global_step:
            final |= {key: value for key, value in last.items() if key.startswith("eval_")}
        else:
            final |= trainer.evaluate()
    artifact_name = "adapter" if isinstance(model, PeftModel) else "model"
    out_dir = workdir / artifact_name
    if spec.config.resources.distributed.sharded:
        # The weights are sharded across the ranks: gathering them whole takes every rank.
        _sharded_save(trainer, model, out_dir, spec.base_model_uri)
    if not distributed.is_main():
        # The rest is rank 0's: the held-out suite runs on its whole copy of the
        # model (which a sharded job refuses at the API), and only its result is reported.
        return TrainedModel(out_dir, artifact_name, output.global_step, {})
    if spec.config.evaluation is not None:
        final |= _held_out_evaluation(model, tokenizer, spec.config.evaluation, eval_rows)
    if not spec.config.resources.distributed.sharded:
        _save(model, tokenizer, out_dir, spec.base_model_uri)
    saved = out_dir
    metrics = {
        key: float(value)
        for key, value in final.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    return TrainedModel(saved, artifact_name, output.global_step, metrics)


def _held_out_evaluation(
    model: Model, tokenizer: PreTrainedTokenizerBase, config: Any, rows: Sequence[TrainingRow]
) -> dict[str, float]:
    """The evaluation suite's metrics on the held-out rows (perplexity, BLEU, ROUGE, exact match)."""
    from workers.engine.evaluation import EvaluationDataError
    from workers.engine.evaluation.suite import evaluate, held_out_data

    print(f"tuneyard: evaluating {', '.join(config.metrics)} on {len(rows)} held-out rows", flush=True)
    try:
        metrics = evaluate(model, tokenizer, config, held_out_data(rows, tokenizer))
    except EvaluationDataError as exc:
        raise DatasetError(f"the held-out rows cannot be evaluated: {exc}") from exc
    # The suite's eval_loss is over whole texts; the Trainer's (kept) is over what training learns.
    metrics.pop("eval_loss", None)
    return metrics


def _sft_trainer(
    model: Model,
    tokenizer: PreTrainedTokenizerBase,
    args: TrainingArguments,
    hyper: Hyperparameters,
    train_rows: Sequence[TrainingRow],
    eval_rows: Sequence[TrainingRow],
    callbacks: list[TrainerCallback],
) -> Trainer:
    def examples(rows: Sequence[TrainingRow]) -> list[dict[str, list[int]]]:
        return sft_examples(
            rows, tokenizer, hyper.max_seq_length, completion_only_loss=hyper.completion_only_loss
        )

    batching = batching_choose(model, hyper.packing, padded=CausalLMCollator(_pad_id(tokenizer)))
    print(f"tuneyard: batching: {batching.description}", flush=True)
    args.train_sampling_strategy = batching.sampling
    return _SftTrainer(
        model=model,
        args=args,
        train_dataset=examples(train_rows),
        eval_dataset=examples(eval_rows) if eval_rows else None,
        data_collator=batching.collator,
        processing_class=tokenizer,
        callbacks=callbacks,
    )


class _SftTrainer(Trainer):
    """The Trainer with a length-grouped sampler whose order depends on the seed and epoch only.

    The Trainer's own draws its order from the global RNG, which dropout has
    advanced differently on each rank by the second epoch; every rank would
    then take its share of a different order, reading some examples twice and
    others never. Seeded per epoch, every rank walks the same order, and a
    resumed run the same as an uninterrupted one.
    """

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        # _sft_trainer gives the Trainer its examples as a list of features: never None,
        # nor a torch Dataset (whose type declares no __iter__).
        assert isinstance(dataset, list)
        return SeededLengthGroupedSampler(
            self.args.train_batch_size * self.args.gradient_accumulation_steps,
            lengths=[len(example["input_ids"]) for example in dataset],
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
        )


def validation_split(
    rows: Sequence[TrainingRow], hyper: Hyperparameters
) -> tuple[list[TrainingRow], list[TrainingRow]]:
    """Training rows and held-out rows, chosen with the job's seed so a retry holds out the same ones."""
    if hyper.validation_fraction == 0:
        return list(rows), []
    held_out = round(len(rows) * hyper.validation_fraction)
    if held_out < 1 or held_out >= len(rows):
        raise DatasetError(
            f"a validation_fraction of {hyper.validation_fraction} of {len(rows)} rows leaves "
            "no validation or no training rows"
        )
    order = list(range(len(rows)))
    random.Random(hyper.seed).shuffle(order)
    chosen = set(order[:held_out])
    return (
        [row for index, row in enumerate(rows) if index not in chosen],
        [row for index, row in enumerate(rows) if index in chosen],
    )


def training_arguments(spec: JobSpec, output_dir: Path) -> TrainingArguments:
    return TrainingArguments(**training_options(spec, output_dir))


def training_options(spec: JobSpec, output_dir: Path) -> dict[str, Any]:
    """The job's hyperparameters as ``TrainingArguments`` keywords (trl's configs take the same)."""
    hyper = spec.config.hyperparameters
    on_gpu = torch.cuda.is_available()
    bf16, fp16 = _precision(hyper.mixed_precision, on_gpu)
    _optimizer_check(hyper.optimizer, on_gpu)
    options = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=hyper.batch_size,
        per_device_eval_batch_size=hyper.batch_size,
        gradient_accumulation_steps=hyper.gradient_accumulation_steps,
        auto_find_batch_size=hyper.auto_find_batch_size,
        learning_rate=hyper.learning_rate,
        num_train_epochs=hyper.epochs,
        max_steps=hyper.max_steps if hyper.max_steps is not None else -1,
        optim=hyper.optimizer.value,
        # Stateful callbacks (early stopping's count) come back with a checkpoint.
        restore_callback_states_from_checkpoint=True,
        lr_scheduler_type=hyper.scheduler.value,
        # transformers 5 reads a warmup_steps below 1 as a fraction of all steps.
        warmup_steps=hyper.warmup_ratio or hyper.warmup_steps,
        weight_decay=hyper.weight_decay,
        max_grad_norm=hyper.max_grad_norm,
        # transformers 5 names gradient checkpointing "activation checkpointing".
        activation_checkpointing=hyper.gradient_checkpointing,
        # The non-reentrant variant works with frozen base weights (adapters)
        # without forcing gradients onto the input embeddings.
        activation_checkpointing_kwargs={"use_reentrant": False} if hyper.gradient_checkpointing else None,
        seed=hyper.seed,
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="steps" if hyper.checkpoint_every_steps else "no",
        save_steps=hyper.checkpoint_every_steps or 500,
        # The artifact store keeps every checkpoint; locally only the newest is needed.
        save_total_limit=1,
        eval_strategy="steps" if hyper.eval_every_steps else "no",
        eval_steps=hyper.eval_every_steps,
        report_to="none",
        # Progress bars are noise in forwarded log lines; progress events carry the numbers.
        disable_tqdm=True,
        use_cpu=not on_gpu,
        bf16=bf16,
        fp16=fp16,
        # Worker processes for data loading fail inside a Celery pool child and
        # would only feed tokens already in memory.
        dataloader_num_workers=0,
        # A PeftModel's forward takes **kwargs, so Trainer cannot find "labels" by itself.
        label_names=["labels"],
    )
    # A strategy's own options take the place of the general ones (activation checkpointing).
    return options | _strategy_options(spec)


def _strategy_options(spec: JobSpec) -> dict[str, Any]:
    """TrainingArguments for the job's distributed strategy; DDP needs none (torchrun's
    environment is enough: gloo on the CPU, NCCL on GPUs)."""
    hyper = spec.config.hyperparameters
    strategy = spec.config.resources.distributed
    if isinstance(strategy, FsdpStrategy):
        return {
            "fsdp": True,
            "fsdp_config": {
                "version": 2,
                # Full shard: each layer is gathered for its forward and backward and freed after.
                "reshard_after_forward": True,
                "cpu_offload": strategy.cpu_offload,
                # Wraps each decoder layer (the model's _no_split_modules).
                "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                # Checkpoints and the saved model are whole, loadable without FSDP.
                "state_dict_type": "FULL_STATE_DICT",
                # FSDP's own: the Trainer's would gather every layer's weights a second time.
                "activation_checkpointing": hyper.gradient_checkpointing,
            },
            "activation_checkpointing": False,
            "activation_checkpointing_kwargs": None,
        }
    if isinstance(strategy, DeepSpeedStrategy):
        return {"deepspeed": deepspeed_config(strategy)}
    return {}


def deepspeed_config(strategy: DeepSpeedStrategy) -> dict[str, Any]:
    """A ZeRO config whose "auto" values the Trainer fills from the job's own arguments."""
    zero: dict[str, Any] = {
        "stage": strategy.stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        # The saved model is whole 16-bit weights rather than ZeRO's per-rank shards.
        "stage3_gather_16bit_weights_on_model_save": strategy.stage == 3,
    }
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_optimization": zero,
    }
    if strategy.cpu_offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if strategy.stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
        # DeepSpeed's CPU Adam steps the offloaded state; a torch optimizer would
        # run it on the GPU's copy, which offloading does not keep.
        config["optimizer"] = {
            "type": "AdamW",
            "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"},
        }
    return config


def _optimizer_check(optimizer: Optimizer, on_gpu: bool) -> None:
    """Refuse an 8-bit optimizer this host cannot run, before the Trainer fails on it mid-setup."""
    if optimizer not in GPU_ONLY_OPTIMIZERS:
        return
    if not on_gpu:
        raise JobInputError(f"the {optimizer.value} optimizer needs a CUDA GPU, and this worker has none")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise JobInputError(f"the {optimizer.value} optimizer needs bitsandbytes, which this worker lacks")


def _precision(choice: MixedPrecision, on_gpu: bool) -> tuple[bool, bool]:
    """(bf16, fp16) for the Trainer; fp32 is neither."""
    bf16_ok = on_gpu and torch.cuda.is_bf16_supported()
    match choice:
        case MixedPrecision.AUTO:
            # The CPU has no fast half precision; an older GPU without bf16 gets fp16.
            return bf16_ok, on_gpu and not bf16_ok
        case MixedPrecision.NO:
            return False, False
        case MixedPrecision.BF16:
            # On the CPU, bf16 autocast works (slowly); on a GPU it must be supported.
            if on_gpu and not bf16_ok:
                raise JobInputError("bf16 mixed precision was asked for, but this GPU has no bf16")
            return True, False
        case MixedPrecision.FP16:
            if not on_gpu:
                raise JobInputError("fp16 mixed precision needs a CUDA GPU, and this worker has none")
            return False, True


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    # Many causal LMs ship without a pad token. Any id will do: the collator
    # masks padding by length, so the pad (even when it equals eos) never
    # reaches the loss or the attention.
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return pad if pad is not None else 0


class CausalLMCollator:
    """Right-pads a batch; labels are the example's own (prompt masked) or its ids; padding is ignored."""

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
            labels[row, : len(ids)] = torch.tensor(
                feature.get("labels", feature["input_ids"]), dtype=torch.long
            )
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
        # Evaluations (eval_loss, ...) are reported like training steps.
        if not logs or not ("loss" in logs or "eval_loss" in logs):
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
        # The Trainer calls on_save once this rank's part of the checkpoint is
        # written; every rank writes its own RNG state (and, sharded, its own
        # optimizer state), so rank 0 waits for all before storing the directory.
        distributed.barrier()
        if self.on_checkpoint is None:
            return
        # TrainingArguments fills in a default output_dir when it is given none; ours always sets one.
        assert args.output_dir is not None
        path = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        self.on_checkpoint(state.global_step, path)


def _save(model: Model, tokenizer: PreTrainedTokenizerBase, out_dir: Path, base_uri: str) -> Path:
    """Save weights (safetensors) and tokenizer, so the directory loads on its own."""
    if isinstance(model, PeftModel):
        # Otherwise the adapter would name this machine's download directory as its base.
        for adapter_config in model.peft_config.values():
            adapter_config.base_model_name_or_path = base_uri
        # "auto" would look the base model up by that URI to see whether the
        # vocabulary was resized; it never is here.
        model.save_pretrained(str(out_dir), save_embedding_layers=False)
    else:
        model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _sharded_save(trainer: Trainer, model: Model, out_dir: Path, base_uri: str) -> None:
    """Gather the sharded weights whole and save them from rank 0 (every rank must call this)."""
    if isinstance(model, PeftModel):
        for adapter_config in model.peft_config.values():
            adapter_config.base_model_name_or_path = base_uri
    trainer.save_model(str(out_dir))
    if distributed.is_main():
        # The Trainer's pickled arguments: nothing a loader needs, and pickles are not to be loaded.
        (out_dir / "training_args.bin").unlink(missing_ok=True)


class EarlyStopping(TrainerCallback, ExportableState):
    """Stops training when a metric has not improved for ``patience`` evaluations in a row.

    Unlike transformers' EarlyStoppingCallback it does not need
    load_best_model_at_end, which would tie the checkpoint cadence to the
    evaluation cadence; the model saved is the last one. Its best value and
    count go into every checkpoint (``state``), so a resumed run stops where
    an uninterrupted one would.
    """

    def __init__(self, metric: str, patience: int, greater_is_better: bool) -> None:
        self.metric, self.patience, self.greater_is_better = metric, patience, greater_is_better
        self.best: float | None = None
        self.evaluations_without_improvement = 0

    def state(self) -> dict[str, Any]:
        return {
            "args": {
                "metric": self.metric,
                "patience": self.patience,
                "greater_is_better": self.greater_is_better,
            },
            "attributes": {
                "best": self.best,
                "evaluations_without_improvement": self.evaluations_without_improvement,
            },
        }

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not metrics or self.metric not in metrics:
            known = ", ".join(sorted(metrics or {}))
            raise JobInputError(
                f"early stopping watches {self.metric!r}, which evaluation lacks; it has: {known}"
            )
        value = float(metrics[self.metric])
        improved = self.best is None or (value > self.best if self.greater_is_better else value < self.best)
        if improved:
            self.best, self.evaluations_without_improvement = value, 0
            return
        self.evaluations_without_improvement += 1
        if self.evaluations_without_improvement >= self.patience:
            print(
                f"tuneyard: early stopping at step {state.global_step}: {self.metric} has not improved "
                f"on {self.best:.6g} for {self.patience} evaluations",
                flush=True,
            )
            control.should_training_stop = True
