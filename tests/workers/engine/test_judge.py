"""LLM-as-judge on the tiny model: the verdict logic, both orders, the cut to the window, the pairs file.

The tiny model as built prefers a position, whatever the answers say, so every
pair ties; taught for a few seconds which answers are right (in both orders), it
judges them. What is checked holds for any judge: its margins are the label
log-likelihoods of a plain forward pass, identical answers always tie, swapping
the two sides swaps the verdict, and a prompt too long for the window is cut in
its answers, never its rubric.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from transformers import AutoModelForCausalLM, AutoTokenizer

from workers.engine import JobInputError
from workers.engine.data import DatasetError
from workers.engine.evaluation.judge import (
    CUT_MARK,
    PairJudgement,
    Preference,
    judge_metrics,
    judge_prompt,
    pairs_judge,
    pairs_read,
    verdict_of,
)
from workers.spec import JUDGE_PAIRS_MAX, JobSpec, JudgeConfig, JudgePair, JudgeVerdict

RUBRIC = "Prefer the right answer."
PAIRS = [
    JudgePair(row=0, prompt="Say hello.", answer_a="Hello! How can I help you today?", answer_b="No."),
    JudgePair(row=1, prompt="Add two and three.", answer_a="Two plus three is six.", answer_b="Five."),
    JudgePair(row=2, prompt="Name a primary colour.", answer_a="Red.", answer_b="Red is a primary colour."),
    JudgePair(row=5, prompt="What is the capital of France?", answer_a="Paris.", answer_b="London."),
    JudgePair(row=7, prompt="List three fruits.", answer_a="Apple, banana and cherry.", answer_b="Bread."),
    JudgePair(row=9, prompt="Translate to French: Thank you", answer_a="Merci.", answer_b="Danke."),
]
# Which answer of each pair above is the better one.
BETTER = ["a", "b", "b", "a", "a", "a"]
CONFIG = JudgeConfig(rubric=RUBRIC, batch_size=4)
# Enough for the tiny model to learn the twelve readings (a few seconds).
STEPS = 60


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The tiny model's matrices are too small to share out: on a busy machine, threads that wait
    # on each other make a training step 10x slower than one thread alone.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def taught(tiny_model_dir: Path):
    """The tiny model trained to put the better answer's label after each reading of the pairs."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    readings = []
    for pair, better in zip(PAIRS, BETTER, strict=True):
        good, bad = (pair.answer_a, pair.answer_b) if better == "a" else (pair.answer_b, pair.answer_a)
        readings += [(pair.prompt, good, bad, "A"), (pair.prompt, bad, good, "B")]
    sequences = []
    for prompt, first, second, label in readings:
        context = judge_prompt(RUBRIC, prompt, first, second)
        context_ids = tokenizer(context)["input_ids"]
        label_ids = tokenizer(context + " " + label, add_special_tokens=False)["input_ids"][
            len(tokenizer(context, add_special_tokens=False)["input_ids"]) :
        ]
        sequences.append((context_ids, label_ids))
    # One right-padded batch; the loss is on the label tokens only (-100 elsewhere).
    longest = max(len(context) + len(label) for context, label in sequences)
    input_ids = torch.full((len(sequences), longest), tokenizer.pad_token_id)
    attention_mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, -100)
    for row, (context, label) in enumerate(sequences):
        whole = context + label
        input_ids[row, : len(whole)] = torch.tensor(whole)
        attention_mask[row, : len(whole)] = 1
        labels[row, len(context) : len(whole)] = torch.tensor(label)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(STEPS):
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), tokenizer


def _label_loglikelihood(model, tokenizer, context: str, label: str) -> float:
    """log p(" label" | context), one forward pass, the context with the tokenizer's own BOS."""
    context_ids = tokenizer(context)["input_ids"]
    bare = tokenizer(context, add_special_tokens=False)["input_ids"]
    whole = tokenizer(context + " " + label, add_special_tokens=False)["input_ids"]
    ids = context_ids + whole[len(bare) :]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), dim=-1)
    return sum(logprobs[position - 1, ids[position]].item() for position in range(len(context_ids), len(ids)))


def _margin_by_hand(model, tokenizer, pair: JudgePair, first: str, second: str) -> float:
    context = judge_prompt(RUBRIC, pair.prompt, first, second)
    return _label_loglikelihood(model, tokenizer, context, "A") - _label_loglikelihood(
        model, tokenizer, context, "B"
    )


@pytest.mark.parametrize(
    ("challenger_first", "champion_first", "verdict"),
    [
        (Preference.CHALLENGER, Preference.CHALLENGER, JudgeVerdict.CHALLENGER),
        (Preference.CHAMPION, Preference.CHAMPION, JudgeVerdict.CHAMPION),
        # The judge followed the position: A both times, or B both times.
        (Preference.CHALLENGER, Preference.CHAMPION, JudgeVerdict.TIE),
        (Preference.CHAMPION, Preference.CHALLENGER, JudgeVerdict.TIE),
        (Preference.NONE, Preference.CHALLENGER, JudgeVerdict.TIE),
        (Preference.NONE, Preference.NONE, JudgeVerdict.TIE),
    ],
)
def test_a_verdict_needs_both_orders_to_agree(challenger_first, champion_first, verdict):
    assert verdict_of(challenger_first, champion_first) is verdict


def test_a_judge_that_always_prefers_answer_a_gives_only_ties():
    pair = PAIRS[0]
    # "A" more likely in both readings: the challenger in the first, the champion in the second.
    judgements = [PairJudgement(pair, (1.5, 0.7)), PairJudgement(pair, (0.1, 3.0))]

    assert [j.verdict for j in judgements] == [JudgeVerdict.TIE, JudgeVerdict.TIE]
    assert judge_metrics(judgements) == {
        "judge_win_rate": 0.5,
        "judge_tie_rate": 1.0,
        "judge_consistency": 0.0,
    }


def test_win_rate_counts_wins_and_half_the_ties():
    pair = PAIRS[0]
    win, loss, tie = (2.0, -1.0), (-2.0, 1.0), (2.0, 1.0)
    judgements = [PairJudgement(pair, margins) for margins in (win, win, loss, tie)]

    assert [j.verdict for j in judgements] == [
        JudgeVerdict.CHALLENGER,
        JudgeVerdict.CHALLENGER,
        JudgeVerdict.CHAMPION,
        JudgeVerdict.TIE,
    ]
    assert judge_metrics(judgements) == {
        "judge_win_rate": 2.5 / 4,
        "judge_tie_rate": 0.25,
        "judge_consistency": 0.75,
    }


def test_the_margins_are_the_label_loglikelihoods_of_a_plain_forward_pass(taught):
    model, tokenizer = taught

    judgements = pairs_judge(model, tokenizer, CONFIG, PAIRS)

    assert [j.pair for j in judgements] == PAIRS
    for judgement in judgements:
        pair = judgement.pair
        challenger_first = _margin_by_hand(model, tokenizer, pair, pair.answer_a, pair.answer_b)
        champion_first = _margin_by_hand(model, tokenizer, pair, pair.answer_b, pair.answer_a)
        assert judgement.margins == pytest.approx((challenger_first, champion_first), abs=1e-4)
        expected = verdict_of(
            Preference.CHALLENGER if challenger_first > 0 else Preference.CHAMPION,
            Preference.CHALLENGER if champion_first < 0 else Preference.CHAMPION,
        )
        assert judgement.verdict is expected


def test_identical_answers_always_tie(tiny):
    model, tokenizer = tiny
    same = [JudgePair(row=p.row, prompt=p.prompt, answer_a=p.answer_a, answer_b=p.answer_a) for p in PAIRS]

    judgements = pairs_judge(model, tokenizer, CONFIG, same)

    # Both readings are the same text, so whichever label the judge likes, each side gets it once.
    assert {j.verdict for j in judgements} == {JudgeVerdict.TIE}
    assert judge_metrics(judgements)["judge_win_rate"] == 0.5


@pytest.mark.parametrize("judge", ["tiny", "taught"])
def test_swapping_the_sides_swaps_every_verdict(judge, request):
    model, tokenizer = request.getfixturevalue(judge)
    swapped = [JudgePair(row=p.row, prompt=p.prompt, answer_a=p.answer_b, answer_b=p.answer_a) for p in PAIRS]
    opposite = {
        JudgeVerdict.CHALLENGER: JudgeVerdict.CHAMPION,
        JudgeVerdict.CHAMPION: JudgeVerdict.CHALLENGER,
        JudgeVerdict.TIE: JudgeVerdict.TIE,
    }

    verdicts = [j.verdict for j in pairs_judge(model, tokenizer, CONFIG, PAIRS)]
    swapped_verdicts = [j.verdict for j in pairs_judge(model, tokenizer, CONFIG, swapped)]

    assert swapped_verdicts == [opposite[verdict] for verdict in verdicts]


def test_a_judge_that_prefers_positions_ties_every_pair(tiny):
    model, tokenizer = tiny

    judgements = pairs_judge(model, tokenizer, CONFIG, PAIRS)

    # The untrained model picks a label, not an answer: each reading prefers the same position.
    assert {j.verdict for j in judgements} == {JudgeVerdict.TIE}
    assert judge_metrics(judgements) == {
        "judge_win_rate": 0.5,
        "judge_tie_rate": 1.0,
        "judge_consistency": 0.0,
    }


def test_a_judge_that_knows_the_better_answers_gives_wins_and_losses_in_both_orders(taught):
    model, tokenizer = taught

    judgements = pairs_judge(model, tokenizer, CONFIG, PAIRS)

    expected = [JudgeVerdict.CHALLENGER if better == "a" else JudgeVerdict.CHAMPION for better in BETTER]
    assert [j.verdict for j in judgements] == expected
    assert judge_metrics(judgements) == {
        "judge_win_rate": pytest.approx(4 / 6),
        "judge_tie_rate": 0.0,
        "judge_consistency": 1.0,
    }


@pytest.mark.parametrize(
    ("question", "cuts"),
    [("", 2), (" Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000." * 60, 3)],
    ids=["short-question", "long-question"],
)
def test_texts_too_long_for_the_window_are_cut_and_the_rubric_kept(tiny, monkeypatch, question, cuts):
    model, tokenizer = tiny
    long_a = "The quick brown fox jumps over the lazy dog. " * 200
    long_b = "A model learns from data. " * 200
    prompt = "Say something long." + question
    pair = JudgePair(row=0, prompt=prompt, answer_a=long_a, answer_b=long_b)
    read: list[str] = []
    original = judge_prompt

    def spy(rubric: str, prompt: str, first: str, second: str) -> str:
        text = original(rubric, prompt, first, second)
        read.append(text)
        return text

    monkeypatch.setattr("workers.engine.evaluation.judge.judge_prompt", spy)
    config = JudgeConfig(rubric=RUBRIC, max_prompt_tokens=256)

    (judgement,) = pairs_judge(model, tokenizer, config, [pair])

    readings = [text for text in read if "Say something long." in text]
    assert len(readings) == 2
    for text in readings:
        assert text.startswith(RUBRIC) and "Question:\nSay something long." in text
        # Each answer cut, and a question longer than half the room too; both answers still read.
        assert text.count(CUT_MARK) == cuts
        assert "Answer A:\nThe quick brown fox" in text or "Answer A:\nA model learns" in text
        assert len(tokenizer(text)["input_ids"]) <= 256
    assert judgement.verdict in set(JudgeVerdict)


def test_a_rubric_that_fills_the_window_is_refused(tiny):
    model, tokenizer = tiny
    config = JudgeConfig(rubric="Judge carefully. " * 200, max_prompt_tokens=256)

    with pytest.raises(JobInputError, match="the rubric takes"):
        pairs_judge(model, tokenizer, config, PAIRS[:1])


def _pairs_file(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_pairs_file_is_read_line_by_line(tmp_path):
    lines = [json.dumps(pair.model_dump()) for pair in PAIRS]
    assert pairs_read(_pairs_file(tmp_path, [lines[0], "", *lines[1:]])) == PAIRS


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "there are no pairs"),
        (['{"row": 0, "prompt": "Q", "answer_a": "a"}'], "line 1 of the pairs is not a pair: answer_b"),
        (['{"row": 0, "prompt": "Q"'], "line 1 of the pairs is not a pair"),
        (
            ['{"row": 0, "prompt": "Q", "answer_a": "a", "answer_b": "b"}'] * 2,
            "line 2 of the pairs repeats row 0",
        ),
        (['{"row": -1, "prompt": "Q", "answer_a": "a", "answer_b": "b"}'], "row: Input should be greater"),
        (['{"row": 0, "prompt": "Q", "answer_a": "a", "answer_b": "b", "judge": "me"}'], "judge: Extra"),
        (["x" * 400_000], "line 1 of the pairs is over"),
    ],
)
def test_a_bad_pairs_file_fails_with_the_line_that_is_wrong(tmp_path, lines, message):
    with pytest.raises(DatasetError, match=message):
        pairs_read(_pairs_file(tmp_path, lines))


def test_a_pairs_file_past_the_limit_is_refused(tmp_path):
    line = '{{"row": {}, "prompt": "Q", "answer_a": "a", "answer_b": "b"}}'
    lines = [line.format(row) for row in range(JUDGE_PAIRS_MAX + 1)]

    with pytest.raises(DatasetError, match=f"at most {JUDGE_PAIRS_MAX} pairs"):
        pairs_read(_pairs_file(tmp_path, lines))


def _spec(**fields: object) -> JobSpec:
    base = {
        "job_id": 1,
        "attempt": 1,
        "project": "demo",
        "base_model_uri": "org/judge",
        "dataset_uris": ["runs:/r/pairs/pairs.jsonl"],
        "config": {},
        "mlflow_experiment": "tuneyard/demo",
    }
    return JobSpec.model_validate(base | fields)


def test_an_evaluate_job_scores_metrics_or_judges_pairs_never_both():
    judge = {"rubric": RUBRIC}

    assert _spec(kind="evaluate", judge=judge).judge == JudgeConfig(rubric=RUBRIC)
    for wrong in (
        {"kind": "evaluate"},
        {"kind": "evaluate", "judge": judge, "evaluation": {}},
        {"kind": "finetune", "judge": judge},
    ):
        with pytest.raises(ValidationError, match="carries 'evaluation' or else 'judge'"):
            _spec(**wrong)


@pytest.mark.parametrize(
    ("judge", "message"),
    [
        ({"rubric": "  "}, "at least 1 character"),
        ({"rubric": "x" * 4001}, "at most 4000 characters"),
        ({"rubric": RUBRIC, "max_prompt_tokens": 64}, "greater than or equal to 128"),
        ({"rubric": RUBRIC, "temperature": 0}, "Extra inputs are not permitted"),
    ],
)
def test_a_bad_judge_config_is_refused(judge, message):
    with pytest.raises(ValidationError, match=message):
        JudgeConfig.model_validate(judge)
