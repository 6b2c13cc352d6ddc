"""Generative tasks scored by their answer: read it out of a generation, compare it with the reference's.

A model asked "Natalia sold 48 clips in April and half as many in May. How
many in all?" writes a few sentences and ends "... the answer is 72". What is
scored is the answer, not the prose around it: ``answer_extract`` finds it
(the whole text, a regular expression's group, the last number, a choice
letter) and ``answers_match`` compares it with the reference's, exactly or as
numbers within a tolerance. ``answer_accuracy`` is the share of rows whose
answer matches one of their references.

No torch here: predictions made anywhere can be scored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from statistics import fmean

# The stdlib's ``re`` cannot be interrupted; ``regex`` (a tokenizers/transformers dependency, so
# on every worker) takes a timeout, and a user's pattern that backtracks for ever must not hang a job.
import regex

from workers.engine.evaluation import EvaluationDataError
from workers.engine.evaluation.text import normalize_answer
from workers.spec import AnswerComparison, AnswerConfig, AnswerExtraction

# A pattern that needs longer than this on one generation finds nothing there.
PATTERN_TIMEOUT_SECONDS = 1.0

# Digits with optional thousands commas and decimals, signed: "72", "-3.5", "1,000".
_NUMBER = re.compile(r"[-+]?\d(?:[\d,]*\d)?(?:\.\d+)?")
# What may surround a number read whole: "$18.00", " 42. ", "7%".
_NUMBER_DECORATION = " \t\n\r$€£%."
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class ScoredAnswer:
    extracted: str | None  # None: the generation holds no answer of the asked kind
    score: float  # 1.0 right, 0.0 wrong


def answer_extract(text: str, config: AnswerConfig) -> str | None:
    """The answer ``text`` gives, in the form compared; None where it gives none."""
    match config.extraction:
        case AnswerExtraction.WHOLE:
            return text
        case AnswerExtraction.LAST_NUMBER:
            numbers = _NUMBER.findall(text)
            return _number_canonical(numbers[-1]) if numbers else None
        case AnswerExtraction.CHOICE_LETTER:
            return _choice_letter(text, config.choice_count)
        case AnswerExtraction.REGEX:
            assert config.pattern is not None  # AnswerConfig guarantees it
            try:
                found = _compiled(config.pattern).search(text, timeout=PATTERN_TIMEOUT_SECONDS)
            except TimeoutError:
                return None
            return found.group(1) if found is not None and found.group(1) is not None else None


def answers_match(answer: str, reference: str, config: AnswerConfig, *, ignore_case: bool) -> bool:
    """Whether two extracted answers are the same: as normalized text, or as numbers within tolerance."""
    if config.comparison is AnswerComparison.NUMERIC:
        ours, theirs = _number(answer), _number(reference)
        if ours is None or theirs is None:
            return False
        return abs(ours - theirs) <= Decimal(str(config.tolerance))
    return normalize_answer(answer, ignore_case=ignore_case) == normalize_answer(
        reference, ignore_case=ignore_case
    )


def reference_answer(reference: str, config: AnswerConfig) -> str:
    """The reference's answer: extracted as a generation's is, or the whole reference where none is found."""
    extracted = answer_extract(reference, config)
    return extracted if extracted is not None else reference


def answers_score(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    config: AnswerConfig,
    *,
    ignore_case: bool = False,
) -> list[ScoredAnswer]:
    """Each prediction's answer, and whether it matches one of its references' answers."""
    if not predictions:
        raise EvaluationDataError("there are no predictions to score")
    if len(predictions) != len(references):
        raise EvaluationDataError(
            f"{len(predictions)} predictions but {len(references)} references: each prediction needs its own"
        )
    scored = []
    for prediction, refs in zip(predictions, references, strict=True):
        extracted = answer_extract(prediction, config)
        right = extracted is not None and any(
            answers_match(extracted, reference_answer(ref, config), config, ignore_case=ignore_case)
            for ref in refs
        )
        scored.append(ScoredAnswer(extracted, float(right)))
    return scored


def answer_accuracy(scored: Sequence[ScoredAnswer]) -> dict[str, float]:
    return {"answer_accuracy": fmean(answer.score for answer in scored)}


def choice_letters(count: int) -> str:
    """The letters that name ``count`` choices: "ABCD" for four."""
    return _LETTERS[:count]


def _choice_letter(text: str, count: int) -> str | None:
    letters = choice_letters(count)
    # "The answer is (C)" wins over a letter met earlier ("A good question. The answer is C").
    stated = regex.findall(rf"\banswer\s*(?:is|:)?\s*\(?([{letters}])\b", text, flags=regex.IGNORECASE)
    stated = [letter for letter in stated if letter in letters]  # the letter itself is case-sensitive
    if stated:
        return stated[-1]
    standalone = regex.search(rf"(?<![A-Za-z0-9])([{letters}])(?![A-Za-z0-9])", text)
    return standalone.group(1) if standalone is not None else None


def _number_canonical(text: str) -> str:
    """ "1,000" and "1000.00" as "1000": numbers compared exactly compare as numbers."""
    value = _number(text)
    return text if value is None else format(value.normalize(), "f")


def _number(text: str) -> Decimal | None:
    cleaned = text.strip(_NUMBER_DECORATION).replace(",", "")
    if not cleaned or not _NUMBER.fullmatch(cleaned):
        return None
    try:
        return Decimal(cleaned)
    except InvalidOperation:
        return None


_PATTERNS: dict[str, regex.Pattern[str]] = {}


def _compiled(pattern: str) -> regex.Pattern[str]:
    # Compiled once per job, not once per row.
    if pattern not in _PATTERNS:
        _PATTERNS[pattern] = regex.compile(pattern)
    return _PATTERNS[pattern]
