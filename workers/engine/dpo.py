"""Direct preference optimization with trl's ``DPOTrainer``.

The model arrives with its method already applied (``methods``). With an
adapter, trl's reference is the same model with the adapter switched off, so
no second copy is held; with full fine-tuning trl loads a frozen copy of the
base model as the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase, TrainerCallback
from trl import DPOConfig, DPOTrainer

from workers.engine.data import DatasetError, PreferenceRow, TrainingRow
from workers.spec import DpoObjective, Hyperparameters

if TYPE_CHECKING:
    from workers.engine.methods import Model


def dpo_trainer(
    model: Model,
    tokenizer: PreTrainedTokenizerBase,
    objective: DpoObjective,
    options: dict[str, Any],
    hyper: Hyperparameters,
    train_rows: Sequence[TrainingRow],
    eval_rows: Sequence[TrainingRow],
    callbacks: list[TrainerCallback],
) -> DPOTrainer:
    """A DPOTrainer with the same training arguments an SFT job would get, plus DPO's own."""
    config = DPOConfig(
        **options,
        beta=objective.beta,
        loss_type=[objective.loss_type.value],
        max_length=hyper.max_seq_length,
        # The base model is data a user uploaded; its repository's code must not run here.
        trust_remote_code=False,
    )
    if tokenizer.pad_token is None:
        # trl pads chosen and rejected answers to one length and needs a pad token for it.
        tokenizer.pad_token = tokenizer.eos_token
    return DPOTrainer(
        model=model,
        args=config,
        train_dataset=_preference_dataset(train_rows),
        eval_dataset=_preference_dataset(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def _preference_dataset(rows: Sequence[TrainingRow]) -> Dataset:
    pairs = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, PreferenceRow):
            raise DatasetError(
                f"DPO needs a preference dataset (prompt, chosen, rejected); row {number} is not one"
            )
        # trl appends an answer to its prompt as it is; the blank line matches
        # how supervised fine-tuning lays a preference row out (``sft``), so an
        # SFT-then-DPO model sees one layout.
        pairs.append({"prompt": f"{row.prompt}\n\n", "chosen": row.chosen, "rejected": row.rejected})
    return Dataset.from_list(pairs)
