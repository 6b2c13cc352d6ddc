"""The metrics an ``EvaluationConfig`` asks for, on one model, in one call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from transformers import PreTrainedTokenizerBase

from workers.engine.data import (
    ChatRow,
    InstructionRow,
    PreferenceRow,
    TextRow,
    TrainingRow,
    format_example,
    instruction_prompt,
)
from workers.engine.evaluation import EvaluationDataError
from workers.engine.evaluation.generation import generate
from workers.engine.evaluation.likelihood import perplexity
from workers.engine.evaluation.multiple_choice import MultipleChoiceExample, multiple_choice_accuracy
from workers.engine.evaluation.text import score_predictions
from workers.spec import EvaluationConfig, EvaluationMetric

if TYPE_CHECKING:
    from workers.engine.methods import Model


@dataclass(frozen=True)
class GenerationExample:
    prompt: str
    references: tuple[str, ...]  # one or more right answers


@dataclass(frozen=True)
class EvaluationData:
    """What the metrics run on; a set only the chosen metrics need may stay empty."""

    validation_texts: Sequence[str] = ()  # perplexity
    generation: Sequence[GenerationExample] = ()  # BLEU, ROUGE, exact match
    multiple_choice: Sequence[MultipleChoiceExample] = ()
    fewshot_pool: Sequence[MultipleChoiceExample] = ()  # k-shot examples are drawn from here
    # Or from multiple_choice itself, each example's own left out (fewshot_pool then stays empty).
    fewshot_from_examples: bool = False


def evaluate(
    model: Model, tokenizer: PreTrainedTokenizerBase, config: EvaluationConfig, data: EvaluationData
) -> dict[str, float]:
    """Every metric ``config`` chooses, by name: ready for ``log_metrics`` and ``JobResult.metrics``.

    Names: ``eval_loss`` and ``perplexity``; ``bleu``; ``rouge1``, ``rouge2``
    and ``rougeL``; ``exact_match``; ``mc_acc`` and ``mc_acc_norm``.
    """
    metrics: dict[str, float] = {}
    if EvaluationMetric.PERPLEXITY in config.metrics:
        metrics |= perplexity(
            model,
            tokenizer,
            data.validation_texts,
            max_seq_length=config.max_seq_length,
            batch_size=config.batch_size,
        )
    if config.generates:
        if not data.generation:
            raise EvaluationDataError("BLEU, ROUGE and exact match need generation examples")
        # Generated once, however many of the three metrics score it.
        predictions = generate(
            model,
            tokenizer,
            [example.prompt for example in data.generation],
            max_new_tokens=config.max_new_tokens,
            batch_size=config.batch_size,
        )
        references = [example.references for example in data.generation]
        metrics |= score_predictions(predictions, references, config)
    if EvaluationMetric.MULTIPLE_CHOICE in config.metrics:
        metrics |= multiple_choice_accuracy(
            model,
            tokenizer,
            data.multiple_choice,
            fewshot_pool=data.fewshot_pool,
            num_fewshot=config.num_fewshot,
            seed=config.seed,
            batch_size=config.batch_size,
            fewshot_from_examples=data.fewshot_from_examples,
        )
    return metrics


def held_out_data(rows: Sequence[TrainingRow], tokenizer: PreTrainedTokenizerBase) -> EvaluationData:
    """What a training job's held-out rows give the metrics: every row's text for perplexity, and
    each instruction's prompt with its output (a preference pair's prompt with the chosen answer, a
    chat's turns before its last assistant turn with that turn) for the generation metrics."""
    from workers.engine.sft import chat_prompt

    texts, generation = [], []
    for row in rows:
        match row:
            case InstructionRow():
                texts.append(format_example(row))
                generation.append(GenerationExample(instruction_prompt(row), (row.output,)))
            case PreferenceRow():
                texts.append(f"{row.prompt}\n\n{row.chosen}")
                generation.append(GenerationExample(f"{row.prompt}\n\n", (row.chosen,)))
            case ChatRow():
                prompt, reference = chat_prompt(row, tokenizer)
                texts.append(prompt + reference)
                if reference:
                    generation.append(GenerationExample(prompt, (reference,)))
            case TextRow():
                texts.append(row.text)
    return EvaluationData(validation_texts=texts, generation=generation)
