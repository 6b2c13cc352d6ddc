"""Greedy generation: the predictions that BLEU, ROUGE and exact match score."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from peft import PeftModel
from transformers import GenerationConfig, GenerationMixin, PreTrainedTokenizerBase

from workers.engine.evaluation.likelihood import inference, pad_token_id

if TYPE_CHECKING:
    from workers.engine.methods import Model


def generate(
    model: Model,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    min_new_tokens: int = 0,
) -> list[str]:
    """The text each prompt continues with, greedily, up to end-of-sequence or ``max_new_tokens`` tokens.

    Only the continuation is returned, in the prompts' order, decoded without
    special tokens and otherwise as is (leading spaces and newlines kept); the
    metrics normalize. Prompts are tokenized as training tokenizes texts (the
    tokenizer's own special tokens), so a prompt in the training template reads
    as in training. ``min_new_tokens`` holds end-of-sequence back that long
    (a benchmark's equal work on every side).

    Batches are made of prompts of similar length (sorted by it), so that
    left padding, computed and thrown away at every step, stays small.
    """
    # model_load loads a causal LM, whose class mixes in GenerationMixin (PreTrainedModel itself
    # declares no generate), and a PeftModel has a generate of its own.
    assert isinstance(model, PeftModel | GenerationMixin)
    config = _greedy(model, tokenizer, max_new_tokens, min_new_tokens)
    device = next(model.parameters()).device
    encoded = [tokenizer(prompt)["input_ids"] for prompt in prompts]
    order = sorted(range(len(encoded)), key=lambda index: len(encoded[index]))
    predictions: dict[int, str] = {}
    with inference(model):
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            input_ids, attention_mask = _left_padded(
                [encoded[index] for index in indices], config.pad_token_id
            )
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                generation_config=config,
            )
            # Left padding lines every prompt up to the same end, where the new tokens begin.
            new_tokens = output[:, input_ids.shape[1] :]
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            predictions |= dict(zip(indices, texts, strict=True))
    return [predictions[index] for index in range(len(prompts))]


def _greedy(
    model: Model, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int, min_new_tokens: int = 0
) -> GenerationConfig:
    # A fresh config rather than the model's: a checkpoint's own sampling or
    # repetition settings would make the metrics depend on where it came from.
    # Its end-of-sequence ids are kept (some models stop on several tokens).
    eos = model.generation_config.eos_token_id
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=eos if eos is not None else tokenizer.eos_token_id,
        pad_token_id=pad_token_id(tokenizer),
    )


def _left_padded(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Generation appends to the right, so the padding has to go on the left.
    longest = max(len(seq) for seq in sequences)
    input_ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, longest - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, longest - len(seq) :] = 1
    return input_ids, attention_mask
