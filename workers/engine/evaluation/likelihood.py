"""How likely a causal language model finds token sequences, and perplexity on validation texts."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from transformers import PreTrainedTokenizerBase

from workers.engine import JobInputError
from workers.engine.data import tokenize
from workers.engine.evaluation import EvaluationDataError
from workers.spec import SpecialTokens

if TYPE_CHECKING:
    from workers.engine.methods import Model


@contextmanager
def inference(model: Model) -> Iterator[None]:
    """No gradients and no dropout while scoring; a model that was training goes back to training."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def token_logprobs(
    model: Model, sequences: Sequence[Sequence[int]], *, batch_size: int, pad_token_id: int
) -> list[torch.Tensor]:
    """For each sequence of n >= 2 tokens, the n - 1 log-probabilities of tokens 2..n given those before.

    The last token is never fed in (nothing after it is scored), so a sequence
    one token longer than the model's context still fits. Batches are
    right-padded and the padding is masked; in a causal model padding after
    a token cannot change that token's prediction anyway.
    """
    device = next(model.parameters()).device
    # Longest first, so each batch holds sequences of similar length and pads little.
    order = sorted(range(len(sequences)), key=lambda index: -len(sequences[index]))
    by_index: dict[int, torch.Tensor] = {}
    with inference(model):
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            input_ids, attention_mask = _right_padded(
                [sequences[index][:-1] for index in indices], pad_token_id
            )
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
            # float32 before log_softmax: bf16 logits would cost a few digits of every score.
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            for row, index in enumerate(indices):
                targets = torch.tensor(sequences[index][1:], dtype=torch.long, device=device).unsqueeze(-1)
                # Only the chosen tokens leave the device, not batch x length x vocabulary.
                by_index[index] = logprobs[row, : len(targets)].gather(-1, targets).squeeze(-1).cpu()
    return [by_index[index] for index in range(len(sequences))]


def perplexity(
    model: Model,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_seq_length: int,
    batch_size: int = 8,
    special_tokens: SpecialTokens = SpecialTokens.TOKENIZER,
) -> dict[str, float]:
    """``eval_loss``, the mean negative log-likelihood per predicted token, and ``perplexity``, its exp.

    Texts are tokenized as training tokenizes them (``data.tokenize``: the
    tokenizer's own special tokens, an appended end-of-sequence, cut to
    ``max_seq_length``), so ``eval_loss`` compares with the training loss;
    with ``SpecialTokens.NONE`` the tokenizer adds none of its own.
    Token-weighted: a long text counts for more than a short one, exactly as
    if the texts were one corpus; every token but each text's first is predicted.
    """
    if not texts:
        raise EvaluationDataError("there are no validation texts")
    if special_tokens is SpecialTokens.TOKENIZER:
        sequences = [example["input_ids"] for example in tokenize(texts, tokenizer, max_seq_length)]
    else:
        sequences = _plain_tokenized(texts, tokenizer, max_seq_length)
    scored = [seq for seq in sequences if len(seq) >= 2]
    if not scored:
        raise EvaluationDataError("the validation texts are too short to predict any token")
    logprobs = token_logprobs(model, scored, batch_size=batch_size, pad_token_id=pad_token_id(tokenizer))
    total_nll = -sum(float(row.double().sum()) for row in logprobs)
    predicted = sum(len(row) for row in logprobs)
    mean_nll = total_nll / predicted
    return {"eval_loss": mean_nll, "perplexity": math.exp(mean_nll)}


def _plain_tokenized(
    texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_seq_length: int
) -> list[list[int]]:
    """``data.tokenize`` without the tokenizer's special tokens: the text's own, then end-of-sequence."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise JobInputError("the base model's tokenizer has no end-of-sequence token")
    return [
        [*tokenizer(text, add_special_tokens=False)["input_ids"][: max_seq_length - 1], eos] for text in texts
    ]


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    # Many causal LMs ship without a pad token; any id will do, since padding is masked.
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    return 0


def _right_padded(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(seq) for seq in sequences)
    input_ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
    return input_ids, attention_mask
