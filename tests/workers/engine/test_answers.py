"""Generative tasks scored by their answer: each extraction kind and comparison, and the settings refused."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from workers.engine.evaluation import EvaluationDataError
from workers.engine.evaluation.answers import (
    answer_accuracy,
    answer_extract,
    answers_match,
    answers_score,
    reference_answer,
)
from workers.spec import AnswerConfig, EvaluationConfig

LAST_NUMBER = AnswerConfig(extraction="last_number")
NUMERIC = AnswerConfig(extraction="last_number", comparison="numeric", tolerance=0.01)
LETTER = AnswerConfig(extraction="choice_letter")
GSM8K_REFERENCE = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("She sold 48 in April and 24 in May, so the answer is 72", "72"),
        ("In all: 1,000 clips.", "1000"),
        ("It costs $18.00.", "18"),
        ("The temperature fell to -3.5 degrees", "-3.5"),
        ("No number here.", None),
    ],
)
def test_last_number_reads_the_last_number_written(text, answer):
    assert answer_extract(text, LAST_NUMBER) == answer


def test_a_gsm8k_answer_scores_against_its_reference_by_the_last_number():
    predictions = [
        "Natalia sold 24 clips in May. 48 + 24 = 72. The answer is 72.",
        "The answer is 70.",
        "I do not know.",
    ]
    scored = answers_score(predictions, [(GSM8K_REFERENCE,)] * 3, LAST_NUMBER)

    assert [(s.extracted, s.score) for s in scored] == [("72", 1.0), ("70", 0.0), (None, 0.0)]
    assert answer_accuracy(scored) == {"answer_accuracy": pytest.approx(1 / 3)}
    assert reference_answer(GSM8K_REFERENCE, LAST_NUMBER) == "72"


def test_numeric_comparison_allows_the_tolerance_and_no_more():
    assert answers_match("3.14", "3.149", NUMERIC, ignore_case=False)
    assert not answers_match("3.14", "3.151", NUMERIC, ignore_case=False)
    assert answers_match("$1,000", "1000.0", AnswerConfig(comparison="numeric"), ignore_case=False)
    assert not answers_match("a thousand", "1000", NUMERIC, ignore_case=False)


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("The answer is (C).", "C"),
        ("B", "B"),
        ("A good question. The answer is D", "D"),  # the stated answer wins over an earlier letter
        ("answer: b", None),  # a lower-case letter is a word, not a choice
        ("E. none of these", None),  # E is past the 4 choices
        ("Because it is blue.", None),
    ],
)
def test_choice_letter_reads_the_stated_or_first_standalone_letter(text, letter):
    assert answer_extract(text, LETTER) == letter


def test_regex_takes_the_one_group_of_the_first_match_and_whole_takes_everything():
    config = AnswerConfig(extraction="regex", pattern=r"answer is (\w+)")

    assert answer_extract("so the answer is Paris, and the answer is Rome", config) == "Paris"
    assert answer_extract("Paris", config) is None
    # The reference goes through the pattern too, and is used whole where it does not match.
    assert reference_answer("Paris", config) == "Paris"
    assert answer_extract("  Paris \n", AnswerConfig()) == "  Paris \n"


def test_exact_comparison_normalizes_whitespace_and_case_only_when_asked():
    whole = AnswerConfig()
    assert answers_match(" Paris\n", "Paris", whole, ignore_case=False)
    assert not answers_match("paris", "Paris", whole, ignore_case=False)
    assert answers_match("paris", "Paris", whole, ignore_case=True)


def test_a_prediction_matches_any_of_its_references():
    scored = answers_score(["The answer is 4"], [("five", "4")], LAST_NUMBER)

    assert scored[0].score == 1.0


def test_a_pattern_that_backtracks_for_ever_finds_nothing_instead_of_hanging(monkeypatch):
    from workers.engine.evaluation import answers

    monkeypatch.setattr(answers, "PATTERN_TIMEOUT_SECONDS", 0.2)
    config = AnswerConfig(extraction="regex", pattern=r"^((?:a|a)+b)")
    started = time.monotonic()

    assert answer_extract("a" * 30 + "c", config) is None
    assert time.monotonic() - started < 15  # 2**30 paths without the timeout


def test_scoring_refuses_what_does_not_line_up():
    with pytest.raises(EvaluationDataError, match="no predictions"):
        answers_score([], [], LAST_NUMBER)
    with pytest.raises(EvaluationDataError, match="2 predictions but 1 references"):
        answers_score(["1", "2"], [("1",)], LAST_NUMBER)


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        ({"extraction": "regex"}, "a 'pattern' is given with extraction 'regex', and only then"),
        ({"pattern": "(x)"}, "a 'pattern' is given with extraction 'regex', and only then"),
        ({"extraction": "regex", "pattern": "answer is \\d+"}, "exactly one group"),
        ({"extraction": "regex", "pattern": "(a"}, "not a regular expression"),
        ({"extraction": "regex", "pattern": "(x)" + "y" * 200}, "at most 200 characters"),
        ({"tolerance": 1}, "'tolerance' is for comparison 'numeric'"),
        ({"comparison": "numeric", "tolerance": -1}, "greater than or equal to 0"),
        ({"comparison": "numeric", "tolerance": "inf"}, "finite number"),
        ({"extraction": "first_word"}, "'whole', 'regex', 'last_number' or 'choice_letter'"),
        ({"choice_count": 1}, "greater than or equal to 2"),
        ({"timeout": 3}, "Extra inputs are not permitted"),
    ],
)
def test_answer_settings_that_cannot_work_are_clear_validation_errors(answer, words):
    with pytest.raises(ValidationError, match=words):
        EvaluationConfig(metrics=["answer_accuracy"], answer=answer)


def test_answer_settings_need_the_answer_accuracy_metric_and_default_to_the_whole_answer():
    with pytest.raises(ValidationError, match="add it to 'metrics'"):
        EvaluationConfig(metrics=["exact_match"], answer={"extraction": "last_number"})
    config = EvaluationConfig(metrics=["answer_accuracy"])
    assert config.generates
    assert config.answer_config == AnswerConfig(extraction="whole", comparison="exact")
    assert config.special_tokens == "tokenizer"
    assert EvaluationConfig(special_tokens="none").special_tokens == "none"
