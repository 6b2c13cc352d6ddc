"""What an evaluate job runs once its inputs are on disk: load the model it names, score the rows.

Knows nothing of MLflow or of the stdout protocol (``workers.engine.job.run_evaluate``
decides where the metrics go), so a test can call it on local files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from workers.engine import JobInputError
from workers.engine.data import DatasetError, MultipleChoiceRow, TrainingRow
from workers.engine.evaluation import EvaluationDataError
from workers.engine.evaluation.answers import choice_letters
from workers.engine.evaluation.multiple_choice import MultipleChoiceExample
from workers.engine.evaluation.suite import (
    EvaluationData,
    GenerationExample,
    PredictionRow,
    evaluate,
    held_out_data,
)
from workers.engine.methods import BaseModelError, first_line, model_load
from workers.spec import (
    AnswerExtraction,
    EvaluationConfig,
    EvaluationMetric,
    FullMethod,
    TrainedArtifactKind,
)

if TYPE_CHECKING:
    from workers.engine.methods import Model

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def evaluated_model_load(
    base_model: Path | str,
    base_uri: str,
    artifact: Path | None,
    artifact_kind: TrainedArtifactKind | None,
    artifact_uri: str = "",
    *,
    on_gpu: bool = False,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedTokenizerBase, Model]:
    """The tokenizer and the model to score: the base model, with the trained adapter on top, or the
    trained whole model instead. Weights are read from safetensors only, the adapter's too: a
    pickle is code, and a checkpoint someone uploaded must not run on a worker."""
    model: Model
    if artifact is not None and artifact_kind is TrainedArtifactKind.MODEL:
        # A whole model trained from a base keeps that base's architecture, and its code.
        tokenizer, model = model_load(
            artifact, artifact_uri, FullMethod(), trust_remote_code=trust_remote_code
        )
    else:
        tokenizer, model = model_load(base_model, base_uri, FullMethod(), trust_remote_code=trust_remote_code)
        if artifact is not None:
            if not (artifact / ADAPTER_WEIGHTS).is_file():
                raise BaseModelError(f"the adapter {artifact_uri!r} has no {ADAPTER_WEIGHTS}")
            try:
                model = PeftModel.from_pretrained(model, artifact, is_trainable=False)
            except (OSError, ValueError, RuntimeError) as exc:
                # e.g. an adapter trained on another base model: its shapes do not fit.
                raise BaseModelError(
                    f"cannot load the adapter {artifact_uri!r} on {base_uri!r}: {first_line(exc)}"
                ) from exc
    if on_gpu and torch.cuda.is_available():
        # transformers wraps PreTrainedModel.to in functools.wraps, whose typeshed type never binds self.
        model = model.to("cuda")  # type: ignore[arg-type]
    return tokenizer, model


def multiple_choice_example(row: MultipleChoiceRow) -> MultipleChoiceExample:
    """A question as the model reads it: lm-evaluation-harness's usual "Question: …\\nAnswer:" prompt
    (ARC, SciQ, OpenBookQA), each choice then scored as the continuation " choice"."""
    return MultipleChoiceExample(f"Question: {row.question}\nAnswer:", row.choices, row.answer)


def lettered_question(row: MultipleChoiceRow, number: int, choice_count: int) -> GenerationExample:
    """A multiple-choice question asked to be answered by its letter, MMLU's generative way:
    "Question: …\nA. …\nB. …\nAnswer:", the right choice's letter as the reference."""
    letters = choice_letters(choice_count)
    if len(row.choices) > len(letters):
        raise DatasetError(
            f"row {number} has {len(row.choices)} choices, more than the {len(letters)} letters "
            f"answer.choice_count names: raise it to {len(row.choices)}"
        )
    listed = "".join(f"{letter}. {choice}\n" for letter, choice in zip(letters, row.choices, strict=False))
    return GenerationExample(f"Question: {row.question}\n{listed}Answer:", (letters[row.answer],))


def evaluation_data(
    config: EvaluationConfig,
    tokenizer: PreTrainedTokenizerBase,
    *,
    rows: Sequence[TrainingRow] = (),
    choice_rows: Sequence[MultipleChoiceRow] = (),
    fewshot_rows: Sequence[MultipleChoiceRow] | None = None,
) -> EvaluationData:
    """What the metrics run on: multiple-choice questions, or the texts and prompts of other rows.

    Without ``fewshot_rows`` the k-shot examples come from the questions themselves.
    Multiple-choice rows under answer_accuracy are asked to be answered by letter.
    """
    if choice_rows and EvaluationMetric.ANSWER_ACCURACY in config.metrics:
        if config.answer_config.extraction is not AnswerExtraction.CHOICE_LETTER or len(config.metrics) > 1:
            raise JobInputError(
                "answer_accuracy on multiple-choice rows reads a choice letter, alone: "
                "set answer.extraction to choice_letter and ask for no other metric"
            )
        count = config.answer_config.choice_count
        return EvaluationData(
            generation=[lettered_question(row, number, count) for number, row in enumerate(choice_rows, 1)]
        )
    if EvaluationMetric.MULTIPLE_CHOICE in config.metrics:
        if len(config.metrics) > 1:
            # One dataset has one schema: multiple-choice rows have no text or reference to score otherwise.
            raise JobInputError("multiple_choice is computed alone: the other metrics need other rows")
        return EvaluationData(
            multiple_choice=[multiple_choice_example(row) for row in choice_rows],
            fewshot_pool=[multiple_choice_example(row) for row in fewshot_rows or ()],
            fewshot_from_examples=fewshot_rows is None and config.num_fewshot > 0,
        )
    return held_out_data(rows, tokenizer)


def model_evaluate(
    model: Model,
    tokenizer: PreTrainedTokenizerBase,
    config: EvaluationConfig,
    data: EvaluationData,
    *,
    predictions_out: list[PredictionRow] | None = None,
) -> dict[str, float]:
    """The suite's metrics; data it cannot score is the dataset's fault, said as such."""
    try:
        return evaluate(model, tokenizer, config, data, predictions_out=predictions_out)
    except EvaluationDataError as exc:
        raise DatasetError(f"the dataset cannot be evaluated: {exc}") from exc
