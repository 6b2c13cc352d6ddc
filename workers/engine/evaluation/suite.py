"""The metrics an ``EvaluationConfig`` asks for, on one model, in one call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
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
from workers.engine.evaluation.answers import answer_accuracy, answers_score
from workers.engine.evaluation.generation import generate
from workers.engine.evaluation.likelihood import perplexity
from workers.engine.evaluation.multiple_choice import MultipleChoiceExample, multiple_choice_accuracy
from workers.engine.evaluation.text import normalize_answer, score_predictions
from workers.spec import EvaluationConfig, EvaluationMetric

if TYPE_CHECKING:
    from workers.engine.methods import Model


@dataclass(frozen=True)
class GenerationExample:
    prompt: str
    references: tuple[str, ...]  # one or more right answers


@dataclass(frozen=True)
class PredictionRow:
    """What the model answered on one evaluated row, kept as a table in the run so runs evaluated on
    the same rows can be read side by side. ``score`` is 1.0 or 0.0: the answer was right (its
    extracted answer matched, with answer_accuracy; else exact match after ``normalize_answer``, or
    the right choice), or None where no answer is scored. ``extracted`` is the answer read out of
    the prediction by answer_accuracy (None where it found none, or was not asked for)."""

    row: int
    input: str
    prediction: str
    reference: str
    score: float | None
    extracted: str | None = None


@dataclass(frozen=True)
class EvaluationData:
    """What the metrics run on; a set only the chosen metrics need may stay empty."""

    validation_texts: Sequence[str] = ()  # perplexity
    generation: Sequence[GenerationExample] = ()  # BLEU, ROUGE, exact match, answer accuracy
    multiple_choice: Sequence[MultipleChoiceExample] = ()
    fewshot_pool: Sequence[MultipleChoiceExample] = ()  # k-shot examples are drawn from here
    # Or from multiple_choice itself, each example's own left out (fewshot_pool then stays empty).
    fewshot_from_examples: bool = False


def evaluate(
    model: Model,
    tokenizer: PreTrainedTokenizerBase,
    config: EvaluationConfig,
    data: EvaluationData,
    *,
    predictions_out: list[PredictionRow] | None = None,
) -> dict[str, float]:
    """Every metric ``config`` chooses, by name: ready for ``log_metrics`` and ``JobResult.metrics``.

    Names: ``eval_loss`` and ``perplexity``; ``bleu``; ``rouge1``, ``rouge2``
    and ``rougeL``; ``exact_match``; ``answer_accuracy``; ``mc_acc`` and ``mc_acc_norm``. Given
    ``predictions_out``, each generated answer or chosen choice is appended to
    it (perplexity answers nothing, so it adds no rows).
    """
    metrics: dict[str, float] = {}
    if EvaluationMetric.PERPLEXITY in config.metrics:
        metrics |= perplexity(
            model,
            tokenizer,
            data.validation_texts,
            max_seq_length=config.max_seq_length,
            batch_size=config.batch_size,
            special_tokens=config.special_tokens,
        )
    if config.generates:
        if not data.generation:
            raise EvaluationDataError("BLEU, ROUGE, exact match and answer accuracy need generation examples")
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
        answers = None
        if EvaluationMetric.ANSWER_ACCURACY in config.metrics:
            answers = answers_score(
                predictions, references, config.answer_config, ignore_case=config.exact_match_ignore_case
            )
            metrics |= answer_accuracy(answers)
        if predictions_out is not None:
            rows = _generation_rows(data.generation, predictions, config.exact_match_ignore_case)
            if answers is not None:
                # The row's score is what answer_accuracy counted, its answer kept beside it.
                rows = [
                    replace(row, extracted=answer.extracted, score=answer.score)
                    for row, answer in zip(rows, answers, strict=True)
                ]
            predictions_out.extend(rows)
    if EvaluationMetric.MULTIPLE_CHOICE in config.metrics:
        chosen: list[int] = []  # each example's best-scored choice
        metrics |= multiple_choice_accuracy(
            model,
            tokenizer,
            data.multiple_choice,
            fewshot_pool=data.fewshot_pool,
            num_fewshot=config.num_fewshot,
            seed=config.seed,
            batch_size=config.batch_size,
            fewshot_from_examples=data.fewshot_from_examples,
            chosen_out=chosen,
            special_tokens=config.special_tokens,
        )
        if predictions_out is not None:
            predictions_out.extend(
                PredictionRow(
                    row=number,
                    input=example.context,
                    prediction=example.choices[choice],
                    reference=example.choices[example.answer],
                    score=float(choice == example.answer),
                )
                for number, (example, choice) in enumerate(zip(data.multiple_choice, chosen, strict=True))
            )
    return metrics


def _generation_rows(
    examples: Sequence[GenerationExample], predictions: Sequence[str], ignore_case: bool
) -> list[PredictionRow]:
    rows = []
    for number, (example, prediction) in enumerate(zip(examples, predictions, strict=True)):
        answer = normalize_answer(prediction, ignore_case=ignore_case)
        right = any(answer == normalize_answer(ref, ignore_case=ignore_case) for ref in example.references)
        rows.append(
            PredictionRow(
                row=number,
                input=example.prompt,
                prediction=prediction,
                reference=" | ".join(example.references),
                score=float(right),
            )
        )
    return rows


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
