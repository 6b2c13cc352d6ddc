"""How examples become batches: padding-free packing where the model allows it, else length grouping.

A padded batch spends compute on padding: with a few long examples among many
short ones, most of a batch is padding. Packing concatenates the batch's
examples into rows with ``position_ids`` restarting at 0 for each; the
attention implementations of transformers read those restarts as sequence
boundaries (flash attention's variable-length kernels, and a block-diagonal
causal mask for sdpa and eager), so no example attends to another.

The batches hold the same examples as padded ones and the loss is the mean over
the same tokens, so packing changes the arithmetic, not the training. Where a
model cannot take packed rows, batches are drawn grouped by length instead
(the Trainer's ``group_by_length`` sampling): less padding, and the same loss in
expectation, since every example is still read once an epoch, in groups of a
random order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

if TYPE_CHECKING:
    from workers.engine.methods import Model

IGNORE_INDEX = -100  # label value the loss skips

Features = list[dict[str, list[int]]]
Collator = Callable[[Features], dict[str, Any]]

# These read position_ids restarts natively (variable-length kernels), so they need no probe,
# and they could not run one: their kernels refuse the float32 weights the probe would use.
_VARLEN_ATTENTION = frozenset({"flash_attention_2", "flash_attention_3", "kernels-community/flash-attn"})


class PackingCollator:
    """Packs a batch's examples into rows; ``position_ids`` restart at 0 where each example starts.

    With ``one_row`` the whole batch is one row and there is no padding at all:
    right for variable-length attention kernels, whose cost follows each
    example's own length. Other kernels attend over the whole row under a
    block-diagonal mask, so a row of every example would cost more attention
    than padding does; there rows are filled up to the batch's longest
    example (first fit, longest first), which keeps the attention no larger
    than a padded batch's and leaves only a little padding.

    The first label of every example is ignored, so the last token of one
    example is never trained to predict the first token of the next; a padded
    batch never trains on that token either (nothing precedes it). Padding is
    a segment of its own (positions from 0 again) that no example attends to,
    and its labels are ignored.

    ``use_cache`` goes with the batch because transformers reads position_ids
    restarts as boundaries only when there is no key/value cache, and a model
    whose config says ``use_cache`` would otherwise build one even in training,
    silently letting the examples see each other.
    """

    def __init__(self, *, one_row: bool = False) -> None:
        self.one_row = one_row

    def __call__(self, features: Features) -> dict[str, Any]:
        rows = [features] if self.one_row else _first_fit(features)
        packed = [_pack_row(row) for row in rows]
        width = max(len(ids) for ids, _, _ in packed)
        input_ids, labels, position_ids = [], [], []
        for ids, row_labels, positions in packed:
            padding = width - len(ids)
            input_ids.append(ids + [0] * padding)
            labels.append(row_labels + [IGNORE_INDEX] * padding)
            position_ids.append(positions + list(range(padding)))
        return {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "position_ids": torch.tensor(position_ids, dtype=torch.long),
            "use_cache": False,
        }


def _first_fit(features: Features) -> list[Features]:
    """The examples in rows of at most the longest example's length: first fit, longest first."""
    ordered = sorted(features, key=lambda feature: len(feature["input_ids"]), reverse=True)
    capacity = len(ordered[0]["input_ids"])
    rows: list[Features] = []
    room: list[int] = []
    for feature in ordered:
        length = len(feature["input_ids"])
        index = next((i for i, free in enumerate(room) if free >= length), None)
        if index is None:
            rows.append([feature])
            room.append(capacity - length)
        else:
            rows[index].append(feature)
            room[index] -= length
    return rows


def _pack_row(features: Features) -> tuple[list[int], list[int], list[int]]:
    input_ids: list[int] = []
    labels: list[int] = []
    position_ids: list[int] = []
    for feature in features:
        ids = feature["input_ids"]
        # An example's own labels keep its prompt masked (completion-only loss).
        own = feature.get("labels", ids)
        input_ids.extend(ids)
        labels.extend([IGNORE_INDEX, *own[1:]])
        position_ids.extend(range(len(ids)))
    return input_ids, labels, position_ids


class SeededLengthGroupedSampler(LengthGroupedSampler):
    """Length-grouped order drawn from ``seed + epoch`` alone: the same on every rank and every run.

    In a job of several processes each rank walks the whole order and takes
    every n-th batch of it (accelerate's batch sharding), so the order must
    agree across ranks; the Trainer sets the epoch on the sampler.
    """

    def __init__(self, batch_size: int, *, lengths: list[int], seed: int) -> None:
        super().__init__(batch_size, lengths=lengths, generator=torch.Generator())
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        self.generator.manual_seed(self.seed + self.epoch)
        return super().__iter__()


@dataclass(frozen=True)
class Batching:
    collator: Collator
    # For TrainingArguments.train_sampling_strategy: "group_by_length" draws
    # batches of similar lengths (only without packing), "random" is the default.
    sampling: str
    description: str  # one line for the job's log


def batching_choose(model: Model, packing: str, padded: Collator) -> Batching:
    """Packing if asked for ("auto") and the model keeps packed examples apart; ``padded`` otherwise."""
    if packing == "off":
        return Batching(padded, sampling="random", description="padded batches (packing off)")
    if _prompt_learning(model):
        # Virtual tokens go before each row and peft drops position_ids: packed
        # examples would share one prefix and attend to each other.
        return Batching(
            padded, sampling="group_by_length", description="length-grouped padded batches (virtual tokens)"
        )
    attention = _attention_implementation(model)
    if attention in _VARLEN_ATTENTION:
        return Batching(PackingCollator(one_row=True), sampling="random", description=f"packed ({attention})")
    if packing_keeps_examples_apart(model):
        return Batching(PackingCollator(), sampling="random", description=f"packed in rows ({attention})")
    return Batching(
        padded,
        sampling="group_by_length",
        description=f"length-grouped padded batches ({attention} cannot take packed rows)",
    )


def _attention_implementation(model: Model) -> str:
    return str(getattr(model.config, "_attn_implementation", None) or "eager")


def packing_keeps_examples_apart(model: Model, tolerance: float = 1e-4) -> bool:
    """Whether two examples packed into one row give the logits they give apart.

    A probe rather than a list of architectures: whether position_ids restarts
    become a block-diagonal mask depends on the model's own code and the
    transformers version (OPT and Bloom ignore them, for one). One forward pass
    over eight tokens is cheap next to training; a model that fails the probe,
    or cannot run it, is padded.
    """
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    if vocab < 8:
        return False
    first, second = [1, 2, 3, 4, 5], [6, 7, 5]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            apart = [_logits(model, ids, list(range(len(ids))), device) for ids in (first, second)]
            packed = _logits(model, first + second, [*range(len(first)), *range(len(second))], device)
    except (RuntimeError, TypeError, ValueError):
        return False
    finally:
        model.train(was_training)
    together = torch.cat(apart, dim=0)
    if packed.shape != together.shape:
        return False  # the model adds positions of its own
    return bool(torch.allclose(packed, together, atol=tolerance, rtol=tolerance))


def _prompt_learning(model: Model) -> bool:
    """Whether a peft model prepends virtual tokens (prefix, P-tuning, prompt tuning)."""
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))


def _logits(model: Model, ids: list[int], positions: list[int], device: Any) -> torch.Tensor:
    output = model(
        input_ids=torch.tensor([ids], device=device),
        position_ids=torch.tensor([positions], device=device),
        use_cache=False,  # as PackingCollator's batches say
    )
    return output.logits[0].float().cpu()
