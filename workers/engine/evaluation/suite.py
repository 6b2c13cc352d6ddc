"""The metrics an ``EvaluationConfig`` asks for, on one model, in one call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from workers.engine.evaluation import EvaluationDataError
from workers.engine.evaluation.generation import generate
from workers.engine.evaluation.likelihood import perplexity
from workers.engine.evaluation.multiple_choice import MultipleChoiceExample, multiple_choice_accuracy
from workers.engine.evaluation.text import score_predictions
from workers.spec import EvaluationConfig, EvaluationMetric


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


def evaluate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: EvaluationConfig, data: EvaluationData
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
        )
    return metrics
