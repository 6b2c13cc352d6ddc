"""Metrics on text: BLEU, ROUGE and exact match of predictions against references.

Each prediction has one reference or several; with several, BLEU counts
n-gram matches against all of them (sacrebleu's multi-reference BLEU), ROUGE
takes the best-matching one (rouge-score's ``score_multi``) and exact match
needs any one to match.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from statistics import fmean

from rouge_score.rouge_scorer import RougeScorer
from sacrebleu import corpus_bleu

from workers.engine.evaluation import EvaluationDataError
from workers.spec import EvaluationConfig, EvaluationMetric

# One entry per prediction: its reference, or its references.
References = Sequence[str | Sequence[str]]

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")

_WHITESPACE = re.compile(r"\s+")


def bleu(predictions: Sequence[str], references: References) -> dict[str, float]:
    """Corpus BLEU (0-100) with sacrebleu's defaults: 13a tokenization, exp smoothing, case kept.

    Corpus-level, not a mean of sentence scores: n-gram counts are summed over
    all predictions first, which is what papers report as BLEU.
    """
    reference_sets = _reference_sets(predictions, references)
    # sacrebleu wants one stream per reference position; a prediction with
    # fewer references than the most fills its gaps with None, which it skips.
    streams = max(len(refs) for refs in reference_sets)
    reference_streams = [
        [refs[position] if position < len(refs) else None for refs in reference_sets]
        for position in range(streams)
    ]
    # sacrebleu documents None as a missing reference, but annotates the references as str only.
    score = corpus_bleu(list(predictions), reference_streams)  # type: ignore[arg-type]
    return {"bleu": float(score.score)}


def rouge(
    predictions: Sequence[str], references: References, *, use_stemmer: bool = False
) -> dict[str, float]:
    """Mean F-measure (0-1) of ROUGE-1, ROUGE-2 and ROUGE-L over the predictions.

    rouge-score's default tokenizer keeps only lower-cased ASCII letters and
    digits, so it suits English text; text in other scripts scores 0. The
    plain mean, not rouge-score's bootstrap aggregate, which resamples at random.
    """
    reference_sets = _reference_sets(predictions, references)
    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
    scores = [
        scorer.score_multi(refs, prediction)
        for prediction, refs in zip(predictions, reference_sets, strict=True)
    ]
    return {name: fmean(score[name].fmeasure for score in scores) for name in ROUGE_TYPES}


def normalize_answer(text: str, *, ignore_case: bool = False) -> str:
    """What exact match compares: the text stripped, every run of whitespace made one space.

    With ``ignore_case`` it is also case-folded (``str.casefold``, so "Straße"
    matches "STRASSE"). Punctuation and articles are kept: "Paris." is not "Paris".
    """
    collapsed = _WHITESPACE.sub(" ", text.strip())
    return collapsed.casefold() if ignore_case else collapsed


def exact_match(
    predictions: Sequence[str], references: References, *, ignore_case: bool = False
) -> dict[str, float]:
    """The share (0-1) of predictions equal to one of their references after ``normalize_answer``."""
    reference_sets = _reference_sets(predictions, references)
    hits = [
        normalize_answer(prediction, ignore_case=ignore_case)
        in {normalize_answer(ref, ignore_case=ignore_case) for ref in refs}
        for prediction, refs in zip(predictions, reference_sets, strict=True)
    ]
    return {"exact_match": fmean(float(hit) for hit in hits)}


def score_predictions(
    predictions: Sequence[str], references: References, config: EvaluationConfig
) -> dict[str, float]:
    """The metrics on text that ``config`` asks for, on predictions made anywhere."""
    metrics: dict[str, float] = {}
    if EvaluationMetric.BLEU in config.metrics:
        metrics |= bleu(predictions, references)
    if EvaluationMetric.ROUGE in config.metrics:
        metrics |= rouge(predictions, references, use_stemmer=config.rouge_use_stemmer)
    if EvaluationMetric.EXACT_MATCH in config.metrics:
        metrics |= exact_match(predictions, references, ignore_case=config.exact_match_ignore_case)
    return metrics


def _reference_sets(predictions: Sequence[str], references: References) -> list[list[str]]:
    """Each prediction's references as a list, after checking that every prediction has some."""
    if not predictions:
        raise EvaluationDataError("there are no predictions to score")
    if len(predictions) != len(references):
        raise EvaluationDataError(
            f"{len(predictions)} predictions but {len(references)} references: each prediction needs its own"
        )
    # A bare string is one reference, not a sequence of one-character references.
    sets = [[refs] if isinstance(refs, str) else list(refs) for refs in references]
    for number, refs in enumerate(sets, start=1):
        if not refs:
            raise EvaluationDataError(f"example {number} has no reference")
    return sets
