"""Multiple-choice accuracy by log-likelihood, as lm-evaluation-harness computes it.

The model reads an example's context and scores each choice as the sum of the
log-probabilities of the choice's tokens given the context; nothing is
generated. ``mc_acc`` is the share of examples whose best-scored choice is
the answer; ``mc_acc_norm`` divides each score by the choice's length first,
so that long answers are not penalised for having more tokens to pay for.

Where lm-evaluation-harness (``multiple_choice`` tasks, its ``hf`` model) makes
a choice, this module makes the same one, so its numbers and ours compare:

* the scored continuation is ``" " + choice`` (its ``target_delimiter``), and
  whitespace ending a context moves to the front of the continuation;
* by default (``SpecialTokens.TOKENIZER``) the tokenizer adds its own special
  tokens, e.g. a Llama-style BOS, as lm-evaluation-harness does since 0.4.9.2
  (``add_bos_token`` left unset), except to a context that already starts with
  the BOS text; ``SpecialTokens.NONE`` adds none, as its ``add_bos_token=False``
  does. An empty context becomes the BOS token (or EOS), unless the choice's
  own tokens already start with it; the context's tokens are the first
  ``len(encode(context))`` of ``encode(context + continuation)``, and the rest
  are the choice's;
* a sequence longer than the model's context window loses tokens on the left;
* ``acc_norm`` divides by ``len(choice)`` in characters: its documentation
  speaks of byte length, its code counts ``str`` characters (the same for ASCII);
* k-shot: each example gets k solved examples (context, ``" "``, the right
  choice, then ``"\\n\\n"``) before its own context, drawn by ``random.sample``
  from a separate pool with one ``random.Random(seed)`` shared by the examples
  in order; ties go to the first choice (``numpy.argmax``);
* k-shot from the evaluated examples themselves (no separate pool, as when its
  ``fewshot_split`` is the test split): k + 1 are drawn and the example itself
  is dropped from them (by value, as its ``x != doc`` does), then the first k kept.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import TYPE_CHECKING

from transformers import PreTrainedTokenizerBase

from workers.engine.evaluation import EvaluationDataError
from workers.engine.evaluation.likelihood import pad_token_id, token_logprobs
from workers.spec import SpecialTokens

if TYPE_CHECKING:
    from workers.engine.methods import Model

TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"
# lm-evaluation-harness's fallback when a model's config names no context length.
DEFAULT_CONTEXT_WINDOW = 2048


@dataclass(frozen=True)
class MultipleChoiceExample:
    context: str  # what the model reads before a choice, e.g. "Question: What is 2+2?\nAnswer:"
    choices: tuple[str, ...]
    answer: int  # index of the right choice


def multiple_choice_accuracy(
    model: Model,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[MultipleChoiceExample],
    *,
    fewshot_pool: Sequence[MultipleChoiceExample] = (),
    num_fewshot: int = 0,
    seed: int = 1234,
    batch_size: int = 8,
    fewshot_from_examples: bool = False,
    chosen_out: list[int] | None = None,
    special_tokens: SpecialTokens = SpecialTokens.TOKENIZER,
) -> dict[str, float]:
    """``mc_acc`` and ``mc_acc_norm`` (0-1) over ``examples``, with ``num_fewshot`` solved examples each.

    With ``fewshot_from_examples`` the solved examples come from ``examples``
    (never an example's own), and ``fewshot_pool`` must be empty. Given
    ``chosen_out``, each example's best-scored choice (the one ``mc_acc`` counts)
    is appended to it.
    """
    check_examples(examples, "example")
    if fewshot_from_examples and fewshot_pool:
        raise EvaluationDataError("few-shot examples come from a pool or from the examples, not both")
    contexts = fewshot_contexts(
        examples,
        examples if fewshot_from_examples else fewshot_pool,
        num_fewshot=num_fewshot,
        seed=seed,
        exclude_self=fewshot_from_examples,
    )
    scores = choice_loglikelihoods(
        model, tokenizer, contexts, examples, batch_size=batch_size, special_tokens=special_tokens
    )
    hits = []
    for score, example in zip(scores, examples, strict=True):
        by_score, by_score_per_character = predicted_choices(score, example.choices)
        hits.append((by_score == example.answer, by_score_per_character == example.answer))
        if chosen_out is not None:
            chosen_out.append(by_score)
    return {
        "mc_acc": fmean(float(hit) for hit, _ in hits),
        "mc_acc_norm": fmean(float(hit) for _, hit in hits),
    }


def fewshot_contexts(
    examples: Sequence[MultipleChoiceExample],
    pool: Sequence[MultipleChoiceExample],
    *,
    num_fewshot: int,
    seed: int,
    exclude_self: bool = False,
) -> list[str]:
    """Each example's context, after ``num_fewshot`` solved examples drawn from ``pool``.

    The same examples, pool and seed always give the same prompts. The pool is
    kept apart from the examples, so an example never sees its own answer; with
    ``exclude_self`` the pool may hold the examples, and each is left out of its own draw.
    """
    if num_fewshot == 0:
        return [example.context for example in examples]
    check_examples(pool, "few-shot example")
    drawn = num_fewshot + 1 if exclude_self else num_fewshot
    if len(pool) < drawn:
        raise EvaluationDataError(
            f"{num_fewshot}-shot needs {drawn} few-shot examples; the pool has {len(pool)}"
        )
    rng = random.Random(seed)
    contexts = []
    for example in examples:
        shots = rng.sample(list(pool), drawn)
        if exclude_self:
            shots = [shot for shot in shots if shot != example][:num_fewshot]
        solved = "".join(
            shot.context + TARGET_DELIMITER + shot.choices[shot.answer] + FEWSHOT_DELIMITER for shot in shots
        )
        contexts.append(solved + example.context)
    return contexts


def choice_loglikelihoods(
    model: Model,
    tokenizer: PreTrainedTokenizerBase,
    contexts: Sequence[str],
    examples: Sequence[MultipleChoiceExample],
    *,
    batch_size: int,
    special_tokens: SpecialTokens = SpecialTokens.TOKENIZER,
) -> list[list[float]]:
    """For each example, the log-likelihood of each choice given its context."""
    window = context_window(model)
    sequences: list[list[int]] = []
    continuation_lengths: list[int] = []
    for context, example in zip(contexts, examples, strict=True):
        for choice in example.choices:
            context_ids, continuation_ids = encode_pair(
                tokenizer, context, TARGET_DELIMITER + choice, special_tokens=special_tokens
            )
            sequences.append((context_ids + continuation_ids)[-(window + 1) :])
            continuation_lengths.append(len(continuation_ids))
    logprobs = token_logprobs(model, sequences, batch_size=batch_size, pad_token_id=pad_token_id(tokenizer))
    # Not row[-length:], which takes the whole row for length 0. A continuation
    # cut short by the context window keeps only the tokens that still fit.
    flat = [
        float(row[max(0, len(row) - length) :].double().sum())
        for row, length in zip(logprobs, continuation_lengths, strict=True)
    ]
    scores = []
    for example in examples:
        scores.append(flat[: len(example.choices)])
        flat = flat[len(example.choices) :]
    return scores


def predicted_choices(loglikelihoods: Sequence[float], choices: Sequence[str]) -> tuple[int, int]:
    """The choice picked by raw log-likelihood, and by log-likelihood per character of the choice."""
    per_character = [score / len(choice) for score, choice in zip(loglikelihoods, choices, strict=True)]
    return _first_argmax(loglikelihoods), _first_argmax(per_character)


def encode_pair(
    tokenizer: PreTrainedTokenizerBase,
    context: str,
    continuation: str,
    *,
    special_tokens: SpecialTokens = SpecialTokens.TOKENIZER,
) -> tuple[list[int], list[int]]:
    """Token ids of the context and of the continuation that follows it (see the module's docstring)."""
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if not context:
        # Checked before moving whitespace, as lm-evaluation-harness does.
        continuation_ids = _encode(tokenizer, continuation, add_special_tokens=False)
        if continuation_ids and continuation_ids[0] == prefix:
            return continuation_ids[:1], continuation_ids[1:]
        return [prefix], continuation_ids
    trailing = len(context) - len(context.rstrip())
    if trailing:
        # BPE tokenizers attach a space to the word after it: "Answer: " + "Paris"
        # would end the context on a lone space, "Answer:" + " Paris" does not.
        context, continuation = context[:-trailing], context[-trailing:] + continuation
    # A context that already starts with the BOS text gets no second one.
    # lm-evaluation-harness compares with the decoded BOS (or EOS), e.g. "<s>".
    prefix_text = tokenizer.decode([prefix]) if prefix is not None else ""
    starts_with_prefix = (
        isinstance(prefix_text, str) and bool(prefix_text) and context.startswith(prefix_text)
    )
    add = special_tokens is SpecialTokens.TOKENIZER and not starts_with_prefix
    context_ids = _encode(tokenizer, context, add_special_tokens=add)
    # Encoded together, so the tokens at the seam are the ones the model would see.
    whole = _encode(tokenizer, context + continuation, add_special_tokens=add)
    return context_ids, whole[len(context_ids) :]


def context_window(model: Model) -> int:
    """How many tokens the model reads at once, from the first of its config's usual names for it."""
    for attribute in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(model.config, attribute, None)
        if value:
            return int(value)
    return DEFAULT_CONTEXT_WINDOW


def check_examples(examples: Sequence[MultipleChoiceExample], noun: str) -> None:
    if not examples:
        raise EvaluationDataError(f"there is no {noun}")
    for number, example in enumerate(examples, start=1):
        if len(example.choices) < 2:
            raise EvaluationDataError(f"{noun} {number} has fewer than two choices")
        if not all(example.choices):
            # acc_norm divides by the choice's length.
            raise EvaluationDataError(f"{noun} {number} has an empty choice")
        if not 0 <= example.answer < len(example.choices):
            raise EvaluationDataError(f"{noun} {number}'s answer {example.answer} is not one of its choices")


def _encode(tokenizer: PreTrainedTokenizerBase, text: str, *, add_special_tokens: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


def _first_argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)
