"""Multiple-choice scores computed the slow, obvious way (one forward pass per choice) to check the engine."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from workers.engine.evaluation.multiple_choice import MultipleChoiceExample


def choice_loglikelihood_by_hand(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    context: str,
    choice: str,
    *,
    add_special_tokens: bool = True,
) -> float:
    """Sum of log p(continuation token | everything before it), one forward per choice; the tokenizer's
    special tokens added, as the engine adds them by default, or none."""
    context_ids = tokenizer(context, add_special_tokens=add_special_tokens)["input_ids"]
    whole = tokenizer(context + " " + choice, add_special_tokens=add_special_tokens)["input_ids"]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=torch.tensor([whole])).logits[0], dim=-1)
    return sum(
        logprobs[position - 1, whole[position]].item() for position in range(len(context_ids), len(whole))
    )


def accuracy_by_hand(
    model,
    tokenizer,
    contexts: list[str],
    examples: list[MultipleChoiceExample],
    *,
    add_special_tokens: bool = True,
):
    correct = correct_norm = 0
    for context, example in zip(contexts, examples, strict=True):
        scores = [
            choice_loglikelihood_by_hand(
                model, tokenizer, context, choice, add_special_tokens=add_special_tokens
            )
            for choice in example.choices
        ]
        normalized = [score / len(choice) for score, choice in zip(scores, example.choices, strict=True)]
        correct += scores.index(max(scores)) == example.answer
        correct_norm += normalized.index(max(normalized)) == example.answer
    return {"mc_acc": correct / len(examples), "mc_acc_norm": correct_norm / len(examples)}
