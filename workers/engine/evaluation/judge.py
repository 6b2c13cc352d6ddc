"""LLM-as-judge: a model compares two answers to a prompt, read in both orders.

No free text is parsed. The judge reads a rubric, the question and the two
answers labelled A and B, and its preference is which of the continuations
``" A"`` and ``" B"`` it finds more likely after "Better answer:". Models
favour a position (often the first answer) whatever it holds, so each pair is
read twice, the challenger first and then the champion first: the challenger
wins only if preferred in both orders, loses only if dispreferred in both, and
the pair is a tie otherwise (Zheng et al., "Judging LLM-as-a-Judge", 2023).

Texts are tokenized with the tokenizer's own special tokens (a Llama-style BOS),
as the model read text in training. Answers too long for the judge's window are
cut at the end, both orders alike, so the rubric and the question are always read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from statistics import fmean
from typing import TYPE_CHECKING

from pydantic import ValidationError
from transformers import PreTrainedTokenizerBase

from workers.engine import JobInputError
from workers.engine.data import DatasetError
from workers.engine.evaluation.likelihood import pad_token_id, token_logprobs
from workers.engine.evaluation.multiple_choice import context_window
from workers.spec import JUDGE_PAIRS_MAX, JUDGE_TEXT_MAX_CHARS, JudgeConfig, JudgePair, JudgeVerdict

if TYPE_CHECKING:
    from workers.engine.methods import Model

LABELS = ("A", "B")
PROMPT_TEMPLATE = (
    "{rubric}\n\n"
    "Question:\n{prompt}\n\n"
    "Answer A:\n{first}\n\n"
    "Answer B:\n{second}\n\n"
    "Which answer is better, A or B?\n"
    "Better answer:"
)
CUT_MARK = " …"
# Room for the label's tokens, and for pieces that tokenize a token or two apart once joined.
_SLACK_TOKENS = 16
# Below this, an answer cut to fit says too little to be judged: the rubric is too long instead.
_MIN_ANSWER_TOKENS = 16
_MIN_PROMPT_TOKENS = 32
# A pair's line holds three texts, each at most JUDGE_TEXT_MAX_CHARS (in UTF-8, up to 4 bytes a
# character, in JSON up to 6 bytes for an escaped one); a longer line is refused before it is parsed.
_LINE_MAX_BYTES = 3 * 6 * JUDGE_TEXT_MAX_CHARS + 1000


class Preference(Enum):
    """Which answer one reading preferred."""

    CHALLENGER = 1
    CHAMPION = -1
    NONE = 0  # exactly as likely: no preference


@dataclass(frozen=True)
class PairJudgement:
    pair: JudgePair
    # log p(" A") - log p(" B") in each order: challenger first, then champion first.
    margins: tuple[float, float]

    @property
    def preferences(self) -> tuple[Preference, Preference]:
        challenger_first, champion_first = self.margins
        return _preference(challenger_first), _preference(-champion_first)

    @property
    def verdict(self) -> JudgeVerdict:
        return verdict_of(*self.preferences)

    @property
    def consistent(self) -> bool:
        """Both orders preferred the same answer (or both none)."""
        first, second = self.preferences
        return first is second


def _preference(margin: float) -> Preference:
    """The preference of a reading whose margin is the challenger's label's log-likelihood lead."""
    if margin > 0:
        return Preference.CHALLENGER
    if margin < 0:
        return Preference.CHAMPION
    return Preference.NONE


def verdict_of(challenger_first: Preference, champion_first: Preference) -> JudgeVerdict:
    """The pair's verdict from its two readings: a win or a loss needs both orders to agree."""
    if challenger_first is champion_first is Preference.CHALLENGER:
        return JudgeVerdict.CHALLENGER
    if challenger_first is champion_first is Preference.CHAMPION:
        return JudgeVerdict.CHAMPION
    return JudgeVerdict.TIE


def judge_metrics(judgements: Sequence[PairJudgement]) -> dict[str, float]:
    """``judge_win_rate`` (wins + ties / 2, over pairs), ``judge_tie_rate`` and ``judge_consistency``
    (the share of pairs whose two readings agreed), all 0-1."""
    if not judgements:
        raise DatasetError("there are no pairs to judge")
    verdicts = [judgement.verdict for judgement in judgements]
    return {
        "judge_win_rate": fmean(verdict.score for verdict in verdicts),
        "judge_tie_rate": fmean(float(verdict is JudgeVerdict.TIE) for verdict in verdicts),
        "judge_consistency": fmean(float(judgement.consistent) for judgement in judgements),
    }


def pairs_read(path: Path) -> list[JudgePair]:
    """The pairs of a judge job's input, one JSON object a line; bounded before anything is parsed."""
    pairs: list[JudgePair] = []
    rows: set[int] = set()
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if len(line) > _LINE_MAX_BYTES:
                raise DatasetError(f"line {number} of the pairs is over {_LINE_MAX_BYTES} bytes")
            if not line.strip():
                continue
            if len(pairs) == JUDGE_PAIRS_MAX:
                raise DatasetError(f"a judge job judges at most {JUDGE_PAIRS_MAX} pairs")
            try:
                pair = JudgePair.model_validate_json(line)
            except ValidationError as exc:
                error = exc.errors()[0]
                where = ".".join(str(part) for part in error["loc"])
                raise DatasetError(
                    f"line {number} of the pairs is not a pair: {where + ': ' if where else ''}{error['msg']}"
                ) from None
            if pair.row in rows:
                raise DatasetError(f"line {number} of the pairs repeats row {pair.row}")
            rows.add(pair.row)
            pairs.append(pair)
    if not pairs:
        raise DatasetError("there are no pairs to judge")
    return pairs


def judge_prompt(rubric: str, prompt: str, first: str, second: str) -> str:
    """What the judge reads before its label: the rubric, the question and answers A and B."""
    return PROMPT_TEMPLATE.format(rubric=rubric.strip(), prompt=prompt, first=first, second=second)


def pairs_judge(
    model: Model, tokenizer: PreTrainedTokenizerBase, config: JudgeConfig, pairs: Sequence[JudgePair]
) -> list[PairJudgement]:
    """Each pair judged in both orders, in batches of ``config.batch_size`` sequences."""
    window = min(context_window(model), config.max_prompt_tokens)
    sequences: list[list[int]] = []
    label_lengths: list[int] = []
    for pair in pairs:
        prompt, challenger, champion = _fitted(tokenizer, config.rubric, pair, window)
        for first, second in ((challenger, champion), (champion, challenger)):
            context = judge_prompt(config.rubric, prompt, first, second)
            for label in LABELS:
                context_ids, label_ids = _encoded(tokenizer, context, " " + label)
                # Left-cut as lm-evaluation-harness cuts, should joined pieces still run a token over.
                sequences.append((context_ids + label_ids)[-(window + 1) :])
                label_lengths.append(len(label_ids))
    logprobs = token_logprobs(
        model, sequences, batch_size=config.batch_size, pad_token_id=pad_token_id(tokenizer)
    )
    scores = [
        float(row[-length:].double().sum()) for row, length in zip(logprobs, label_lengths, strict=True)
    ]
    judgements = []
    for index, pair in enumerate(pairs):
        a_first, b_first, a_second, b_second = scores[4 * index : 4 * index + 4]
        judgements.append(PairJudgement(pair, (a_first - b_first, a_second - b_second)))
    return judgements


def _encoded(
    tokenizer: PreTrainedTokenizerBase, context: str, continuation: str
) -> tuple[list[int], list[int]]:
    """The context's tokens with the tokenizer's own special tokens, and the continuation's tokens as
    they come when the two texts are encoded together (a BPE may merge across the seam)."""
    context_ids = list(tokenizer(context)["input_ids"])
    bare = _tokens(tokenizer, context)
    whole = _tokens(tokenizer, context + continuation)
    return context_ids, whole[len(bare) :] or whole[-1:]


def _fitted(
    tokenizer: PreTrainedTokenizerBase, rubric: str, pair: JudgePair, window: int
) -> tuple[str, str, str]:
    """The pair's prompt and answers, cut at their ends so that a reading fits ``window`` tokens.

    Both answers share what is left after the rubric and the question; one shorter
    than its half leaves the rest to the other. The question is cut only when it
    would take more than half the room, and the rubric never.
    """
    budget = window - _SLACK_TOKENS
    frame = len(_tokens(tokenizer, judge_prompt(rubric, "", "", ""))) + 1  # +1: a BOS, if any
    prompt_ids = _tokens(tokenizer, pair.prompt)
    prompt = pair.prompt
    if budget - frame < _MIN_PROMPT_TOKENS + 2 * _MIN_ANSWER_TOKENS:
        raise JobInputError(
            f"the rubric takes {frame} tokens of the judge's {window}: it leaves too little for the "
            "question and the answers (shorten the rubric, or use a judge that reads more)"
        )
    # The answers are what is judged: a long question takes at most half of what is left.
    prompt_room = (budget - frame) // 2
    if len(prompt_ids) > prompt_room:
        prompt = _cut(tokenizer, prompt_ids, prompt_room)
        prompt_ids = prompt_ids[:prompt_room]
    room = budget - frame - len(prompt_ids)
    a_ids, b_ids = _tokens(tokenizer, pair.answer_a), _tokens(tokenizer, pair.answer_b)
    if len(a_ids) + len(b_ids) <= room:
        return prompt, pair.answer_a, pair.answer_b
    half = room // 2
    a_room = room - min(len(b_ids), half)
    b_room = room - min(len(a_ids), half)
    return prompt, _cut(tokenizer, a_ids, a_room), _cut(tokenizer, b_ids, b_room)


def _cut(tokenizer: PreTrainedTokenizerBase, ids: list[int], keep: int) -> str:
    text = str(tokenizer.decode(ids[:keep], skip_special_tokens=True))
    return text if len(ids) <= keep else text + CUT_MARK


def _tokens(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
