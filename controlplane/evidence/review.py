"""Blind side-by-side review: the challenger's and the champion's answers, sides hidden, votes.

Where the answers come from: for a promotion, the challenger is its model version and the
champion the version deployed to its target (when the promotion was decided: the one deployed
just before). For every suite of the model on which both have a succeeded run, each generation
task's predictions tables (``tracking.table_read``) are paired by ``row``.

Blindness: which side (A or B) shows the challenger is a keyed hash of the promotion, the task and
the row (``challenger_side``): the same on every reload, not guessable from anything the page or
the URL carries. It is shown to a voter only once they have voted on that prompt, and to everyone
once the promotion is decided. Whatever would tell the sides of an unvoted prompt (its per-row
scores, a flip naming it, other people's votes) is held back the same way.

A vote is final: a second vote on the same prompt is refused (the voter has seen the sides by
then, so a changed vote would no longer be blind), and no vote is taken once the promotion is
being decided. The vote row, with its voter and time, is its own audit record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from controlplane import tracking
from controlplane.accounts.models import Role, User
from controlplane.accounts.selectors import membership_role, project_role_check
from controlplane.errors import Conflict, DomainError, Forbidden, ServiceUnavailable, ValidationFailed
from controlplane.evidence.models import ReviewVote, Suite, SuiteRun, SuiteRunJob, SuiteRunStatus, Vote
from controlplane.registry.models import Deployment, ModelVersion, Promotion, PromotionStatus
from controlplane.training.models import Job, JobStatus
from controlplane.training.services.judging import judge_verdicts

Side = Literal["a", "b"]
Verdict = Literal["challenger", "champion", "tie"]
VERDICTS: tuple[Verdict, ...] = ("challenger", "champion", "tie")

# z for a two-sided 95% interval.
Z95 = 1.959963984540054
# Prompt cards per page part (the promotion page, the "more" button, the API's default page).
PROMPTS_PER_PAGE = 10
# Metrics that score no generated text: a task with only these has no answers to compare.
NOT_GENERATIVE = frozenset({"perplexity", "multiple_choice"})


# --- sides and the interval (pure) ---------------------------------------------------------------


def challenger_side(*, promotion_id: int, task: str, row: int) -> Side:
    """Which side shows the challenger on this prompt: an HMAC keyed by the site's secret, so it
    is fixed per (promotion, task, row) and about half the prompts put the challenger on each side."""
    message = f"review-side\x1f{promotion_id}\x1f{task}\x1f{row}".encode()
    digest = hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).digest()
    return "a" if digest[0] & 1 == 0 else "b"


def wilson_interval(successes: float, n: int, *, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (``successes`` of ``n``; a tie counts a half).

    Chosen over the normal approximation because it stays inside [0, 1] and keeps its coverage
    for the few dozen votes a review gets, and over a bootstrap because it is exact and cheap.
    """
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def vote_verdict(*, vote: str, challenger_side: str) -> Verdict:
    """A vote in the challenger's terms, whatever side the voter saw it on."""
    if vote == Vote.TIE:
        return "tie"
    return "challenger" if vote == challenger_side else "champion"


@dataclass(frozen=True)
class Tally:
    """The challenger's record over the votes: win rate = (wins + ties / 2) / votes, with its
    95% Wilson interval."""

    votes: int
    wins: int
    ties: int
    losses: int
    win_rate: float | None
    low: float
    high: float

    @classmethod
    def of(cls, verdicts: Iterable[str]) -> Tally:
        counted = list(verdicts)
        wins, ties = counted.count("challenger"), counted.count("tie")
        n = len(counted)
        score = wins + ties / 2
        low, high = wilson_interval(score, n)
        return cls(n, wins, ties, n - wins - ties, score / n if n else None, low, high)

    # Percentages for the drawn interval (SVG attributes, 0-100).
    @property
    def low_pct(self) -> str:
        return f"{self.low * 100:.1f}"

    @property
    def high_pct(self) -> str:
        return f"{self.high * 100:.1f}"

    @property
    def width_pct(self) -> str:
        return f"{(self.high - self.low) * 100:.1f}"

    @property
    def rate_pct(self) -> str:
        return f"{(self.win_rate or 0) * 100:.1f}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "votes": self.votes,
            "wins": self.wins,
            "ties": self.ties,
            "losses": self.losses,
            "win_rate": self.win_rate,
            "ci_low": self.low,
            "ci_high": self.high,
            "interval": "wilson-95",
        }


# --- where the answers come from (a selector) ----------------------------------------------------


class TableReads:
    """The predictions tables one request reads, each fetched once (they are network calls).

    Used outside any transaction: a read can take seconds, and MLflow may not answer.
    """

    def __init__(self, reader: Callable[[str], list[dict]] = tracking.table_read) -> None:
        self._reader = reader
        self._tables: dict[str, list[dict]] = {}

    def read(self, uri: str) -> list[dict]:
        if uri not in self._tables:
            self._tables[uri] = self._reader(uri)
        return self._tables[uri]


@dataclass(frozen=True)
class Answer:
    text: str
    score: float | None

    @property
    def right(self) -> bool | None:
        return None if self.score is None else self.score >= 0.5


@dataclass(frozen=True)
class PairedRow:
    """One prompt both models answered: a generation task's row, paired by its ``row`` number."""

    suite: str
    task: str
    row: int
    input: str
    reference: str
    challenger: Answer
    champion: Answer

    @property
    def flip(self) -> Literal["right_to_wrong", "wrong_to_right"] | None:
        """Right -> wrong: the champion was right and the challenger is wrong; and the reverse."""
        if self.champion.right is None or self.challenger.right is None:
            return None
        if self.champion.right and not self.challenger.right:
            return "right_to_wrong"
        if self.challenger.right and not self.champion.right:
            return "wrong_to_right"
        return None


@dataclass(frozen=True)
class MetricDelta:
    suite: str
    task: str
    metric: str
    challenger: float
    champion: float

    @property
    def delta(self) -> float:
        return self.challenger - self.champion


@dataclass(frozen=True)
class JudgeRun:
    """A judge job of the challenger's suite run: its verdict per row of the generation task it judged."""

    suite: str
    task: str  # the judge task's name
    of_task: str  # the generation task it judged
    job_id: int
    verdicts: dict[int, Verdict]


@dataclass
class ReviewSource:
    """Everything the review is built from, read once per request."""

    challenger: ModelVersion
    champion: ModelVersion | None
    rows: list[PairedRow] = field(default_factory=list)
    deltas: list[MetricDelta] = field(default_factory=list)
    judges: list[JudgeRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row_get(self, task: str, row: int) -> PairedRow | None:
        for paired in self.rows:
            if paired.task == task and paired.row == row:
                return paired
        return None


def review_champion(*, promotion: Promotion) -> ModelVersion | None:
    """What the challenger is compared with: the version deployed to the promotion's target.

    While the request is open that is the deployment now; once decided, the version that an
    approved promotion had deployed there just before (after an approval the deployment is the
    challenger itself, so it cannot be read from the deployment row).
    """
    version = promotion.model_version
    if PromotionStatus(promotion.status).is_open:
        deployment = (
            Deployment.objects.filter(
                project=version.project, model_name=version.name, target=promotion.target
            )
            .select_related("model_version")
            .first()
        )
        champion = deployment.model_version if deployment else None
    else:
        before = (
            Promotion.objects.filter(
                model_version__project=version.project,
                model_version__name=version.name,
                target=promotion.target,
                status=PromotionStatus.APPROVED,
                decided_at__lt=promotion.decided_at or timezone.now(),
            )
            .exclude(pk=promotion.pk)
            .select_related("model_version")
            .order_by("-decided_at", "-pk")
            .first()
        )
        champion = before.model_version if before else None
    if champion is not None and champion.pk == version.pk:
        return None
    return champion


def _evaluation_metrics(job: Job) -> set[str]:
    evaluation = job.config.get("evaluation") if isinstance(job.config, dict) else None
    metrics = evaluation.get("metrics") if isinstance(evaluation, dict) else None
    return {str(m) for m in metrics} if isinstance(metrics, list) else set()


def _task_entries(suite: Suite) -> dict[str, dict]:
    tasks = suite.tasks if isinstance(suite.tasks, list) else []
    return {str(t["name"]): t for t in tasks if isinstance(t, dict) and "name" in t}


def _is_judge(entry: dict | None, job: Job) -> bool:
    return bool((entry and "judge" in entry) or job.is_judge)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _row_number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _judge_verdicts(job: Job) -> dict[int, Verdict]:
    """The judge's verdict per row, in the challenger's terms (the judge saw the challenger as A)."""
    return {
        number: cast(Verdict, verdict)
        for row, verdict in judge_verdicts(job).items()
        if (number := _row_number(row)) is not None and verdict in VERDICTS
    }


def review_source(*, promotion: Promotion, tables: TableReads | None = None) -> ReviewSource:
    """The paired answers, metric deltas and judge verdicts of ``promotion``'s review.

    Per suite name, the newest suite version on which both versions have a succeeded run; a task
    whose table cannot be read is left out with a note (MLflow away, a table too big).
    """
    tables = tables or TableReads()
    challenger = promotion.model_version
    champion = review_champion(promotion=promotion)
    source = ReviewSource(challenger=challenger, champion=champion)
    if champion is None:
        source.notes.append(
            f"Nothing is deployed to {promotion.target} to compare with: the review needs a champion."
        )
        return source
    runs = (
        SuiteRun.objects.filter(
            suite__project=challenger.project,
            suite__model_name=challenger.name,
            model_version__in=[challenger, champion],
            status=SuiteRunStatus.SUCCEEDED,
        )
        .select_related("suite")
        .order_by("suite__name", "-suite__version", "pk")
    )
    by_suite: dict[int, dict[int, SuiteRun]] = {}
    suites: dict[int, Suite] = {}
    for run in runs:
        by_suite.setdefault(run.suite_id, {}).setdefault(run.model_version_id, run)
        suites[run.suite_id] = run.suite
    chosen: dict[str, tuple[SuiteRun, SuiteRun]] = {}
    for suite_id, pair in by_suite.items():
        suite = suites[suite_id]
        if suite.name not in chosen and challenger.pk in pair and champion.pk in pair:
            chosen[suite.name] = (pair[challenger.pk], pair[champion.pk])
    if not chosen:
        source.notes.append(
            f"No suite of {challenger.name} has finished on both {challenger} and {champion} yet."
        )
        return source
    seen_tasks: set[str] = set()
    for suite_name, (ours, theirs) in chosen.items():
        _source_suite(source, suite_name, ours, theirs, tables, seen_tasks)
    source.rows.sort(key=lambda r: (r.task, r.row))
    return source


def _task_jobs(run: SuiteRun) -> dict[str, Job]:
    return {
        tj.task: tj.job for tj in SuiteRunJob.objects.filter(run=run).select_related("job").order_by("task")
    }


def _source_suite(
    source: ReviewSource,
    suite_name: str,
    ours: SuiteRun,
    theirs: SuiteRun,
    tables: TableReads,
    seen_tasks: set[str],
) -> None:
    entries = _task_entries(ours.suite)
    our_jobs, their_jobs = _task_jobs(ours), _task_jobs(theirs)
    for task, job in our_jobs.items():
        entry = entries.get(task)
        if _is_judge(entry, job):
            if job.status != JobStatus.SUCCEEDED:
                continue
            of_task = str((entry or {}).get("of_task") or (job.config or {}).get("of_task") or "")
            try:
                verdicts = _judge_verdicts(job)
            except DomainError as exc:
                source.notes.append(f"{suite_name}/{task}: the judge's verdicts could not be read ({exc}).")
                continue
            source.judges.append(JudgeRun(suite_name, task, of_task, job.pk, verdicts))
            continue
        for metric, value in sorted((ours.results or {}).get(task, {}).items()):
            mine, other = _number(value), _number((theirs.results or {}).get(task, {}).get(metric))
            if mine is not None and other is not None:
                source.deltas.append(MetricDelta(suite_name, task, metric, mine, other))
        other_job = their_jobs.get(task)
        metrics = _evaluation_metrics(job)
        if other_job is None or (metrics and metrics <= NOT_GENERATIVE):
            continue
        if task in seen_tasks:
            source.notes.append(f"{suite_name}/{task}: a task of that name is reviewed from another suite.")
            continue
        uris = (job.artifacts or {}).get("predictions"), (other_job.artifacts or {}).get("predictions")
        if not all(uris):
            source.notes.append(f"{suite_name}/{task}: a run kept no per-row answers.")
            continue
        try:
            mine_rows, other_rows = tables.read(str(uris[0])), tables.read(str(uris[1]))
        except (ServiceUnavailable, ValueError) as exc:
            source.notes.append(f"{suite_name}/{task}: the answers could not be read ({exc}).")
            continue
        seen_tasks.add(task)
        others = {n: r for r in other_rows if (n := _row_number(r.get("row"))) is not None}
        for mine_row in mine_rows:
            number = _row_number(mine_row.get("row"))
            if number is None or number not in others:
                continue
            other_row = others[number]
            source.rows.append(
                PairedRow(
                    suite=suite_name,
                    task=task,
                    row=number,
                    input=str(mine_row.get("input") or ""),
                    reference=str(mine_row.get("reference") or ""),
                    challenger=Answer(str(mine_row.get("prediction") or ""), _number(mine_row.get("score"))),
                    champion=Answer(str(other_row.get("prediction") or ""), _number(other_row.get("score"))),
                )
            )


# --- votes (the service) -------------------------------------------------------------------------


def vote_list(*, promotion: Promotion) -> QuerySet[ReviewVote]:
    return ReviewVote.objects.filter(promotion=promotion).select_related("voter")


def _voting_closed(promotion: Promotion) -> str:
    if promotion.status == PromotionStatus.REQUESTED:
        return ""
    if promotion.status == PromotionStatus.APPROVING:
        return "This promotion is being decided: its review is closed."
    return f"This promotion is {promotion.status}: its review is closed and its votes are final."


def vote_refusal(*, promotion: Promotion, user: User) -> str:
    """Why ``user`` may not vote on ``promotion``'s prompts now; empty when they may."""
    if closed := _voting_closed(promotion):
        return closed
    role = membership_role(user=user, project=promotion.model_version.project)
    if role is None or not role.includes(Role.APPROVER):
        return "Only approvers vote."
    if promotion.requested_by_id == user.pk:
        return "You asked for this promotion: other approvers review it (four eyes)."
    return ""


def review_vote_cast(
    *,
    promotion: Promotion,
    user: User,
    task: str,
    row: int,
    vote: Vote,
    source: ReviewSource | None = None,
) -> ReviewVote:
    """Record ``user``'s blind vote on one prompt; returns it with the challenger's side.

    Refused to anyone but an approver, to the requester, on a prompt that is not in the
    review, a second time on the same prompt, and once the promotion is no longer requested.
    """
    project_role_check(user=user, project=promotion.model_version.project, role=Role.APPROVER)
    if promotion.requested_by_id == user.pk:
        raise Forbidden("You asked for this promotion: other approvers review it (four eyes).")
    if closed := _voting_closed(promotion):
        raise Conflict(closed)
    # The prompt must be one of the review's: read before any transaction (network calls).
    source = source or review_source(promotion=promotion)
    if source.row_get(task, row) is None:
        raise ValidationFailed(f"This review has no prompt {task!r} row {row}.")
    side = challenger_side(promotion_id=promotion.pk, task=task, row=row)
    with transaction.atomic():
        # The promotion's row lock orders this vote against a decision claiming it (a
        # conditional update of the same row): a vote never lands after the decision.
        locked = Promotion.objects.select_for_update().get(pk=promotion.pk)
        if closed := _voting_closed(locked):
            raise Conflict(closed)
        earlier = ReviewVote.objects.filter(promotion=locked, task=task, row=row, voter=user).first()
        if earlier is not None:
            raise _already_voted(earlier)
        try:
            with transaction.atomic():
                return ReviewVote.objects.create(
                    promotion=locked, task=task, row=row, voter=user, challenger_side=side, vote=vote
                )
        except IntegrityError:
            # Two votes of the same person racing: the first one stands.
            pass
    earlier = ReviewVote.objects.get(promotion=promotion, task=task, row=row, voter=user)
    raise _already_voted(earlier)


def _already_voted(vote: ReviewVote) -> Conflict:
    return Conflict(
        f"You voted {vote.get_vote_display()} on this prompt already; a vote is final once the sides "
        "are shown, so nothing changed."
    )


# --- what the page and the API show ----------------------------------------------------------------


@dataclass(frozen=True)
class PromptView:
    """One prompt as ``user`` sees it: answers as sides A and B; the sides told once revealed."""

    paired: PairedRow
    side: Side
    my_vote: str | None
    revealed: bool
    error: str = ""

    @property
    def task(self) -> str:
        return self.paired.task

    @property
    def row(self) -> int:
        return self.paired.row

    @property
    def a(self) -> Answer:
        return self.paired.challenger if self.side == "a" else self.paired.champion

    @property
    def b(self) -> Answer:
        return self.paired.champion if self.side == "a" else self.paired.challenger

    @property
    def challenger_label(self) -> str:
        return self.side.upper()

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "row": self.row,
            "suite": self.paired.suite,
            "input": self.paired.input,
            "reference": self.paired.reference,
            "answer_a": self.a.text,
            "answer_b": self.b.text,
            "my_vote": self.my_vote,
            "challenger_side": self.side if self.revealed else None,
            "score_a": self.a.score if self.revealed else None,
            "score_b": self.b.score if self.revealed else None,
        }


@dataclass(frozen=True)
class FlipView:
    task: str
    row: int
    input: str
    kind: str  # right_to_wrong | wrong_to_right

    @property
    def label(self) -> str:
        return "right → wrong" if self.kind == "right_to_wrong" else "wrong → right"


@dataclass(frozen=True)
class JudgeAgreement:
    """How often the judge's verdict on a row matched the human votes on it (each vote counted)."""

    suite: str
    task: str
    of_task: str
    job_id: int
    pairs: int
    tally: Tally  # the judge's own verdicts, in the challenger's terms
    compared: int
    agreed: int

    @property
    def rate(self) -> float | None:
        return self.agreed / self.compared if self.compared else None


@dataclass
class ReviewContext:
    """What ``evidence/_review.html`` shows as ``review``."""

    promotion: Promotion
    source: ReviewSource
    tally: Tally
    prompts: list[PromptView]
    offset: int
    total: int
    voted_by_me: int
    refusal: str
    right_to_wrong: int
    wrong_to_right: int
    flips: list[FlipView]
    hidden_flips: int
    judges: list[JudgeAgreement]

    @property
    def can_vote(self) -> bool:
        return not self.refusal

    @property
    def next_offset(self) -> int | None:
        end = self.offset + len(self.prompts)
        return end if end < self.total else None

    @property
    def decided(self) -> bool:
        return not PromotionStatus(self.promotion.status).is_open


def _revealed_rows(
    promotion: Promotion, user: User, votes: Sequence[ReviewVote]
) -> set[tuple[str, int]] | None:
    """The prompts whose sides ``user`` may see; None: all of them (the promotion is decided)."""
    if not PromotionStatus(promotion.status).is_open:
        return None
    return {(v.task, v.row) for v in votes if v.voter_id == user.pk}


def review_build(
    *,
    promotion: Promotion,
    user: User,
    offset: int = 0,
    limit: int = PROMPTS_PER_PAGE,
    source: ReviewSource | None = None,
    tables: TableReads | None = None,
) -> ReviewContext:
    """The review as ``user`` may see it, with ``limit`` prompts from ``offset`` (in task, row order)."""
    project_role_check(user=user, project=promotion.model_version.project, role=Role.VIEWER)
    source = source or review_source(promotion=promotion, tables=tables)
    votes = list(vote_list(promotion=promotion))
    revealed = _revealed_rows(promotion, user, votes)
    mine = {(v.task, v.row): v.vote for v in votes if v.voter_id == user.pk}
    page = source.rows[max(offset, 0) : max(offset, 0) + limit]
    prompts = [
        PromptView(
            paired=p,
            side=challenger_side(promotion_id=promotion.pk, task=p.task, row=p.row),
            my_vote=mine.get((p.task, p.row)),
            revealed=revealed is None or (p.task, p.row) in revealed,
        )
        for p in page
    ]
    flips = [(p, p.flip) for p in source.rows if p.flip]
    shown = [
        FlipView(p.task, p.row, p.input, kind)
        for p, kind in flips
        if kind and (revealed is None or (p.task, p.row) in revealed)
    ]
    verdicts = [vote_verdict(vote=v.vote, challenger_side=v.challenger_side) for v in votes]
    return ReviewContext(
        promotion=promotion,
        source=source,
        tally=Tally.of(verdicts),
        prompts=prompts,
        offset=max(offset, 0),
        total=len(source.rows),
        voted_by_me=len(mine),
        refusal=vote_refusal(promotion=promotion, user=user),
        right_to_wrong=sum(kind == "right_to_wrong" for _, kind in flips),
        wrong_to_right=sum(kind == "wrong_to_right" for _, kind in flips),
        flips=shown,
        hidden_flips=len(flips) - len(shown),
        judges=_judge_agreements(source, votes),
    )


def _judge_agreements(source: ReviewSource, votes: Sequence[ReviewVote]) -> list[JudgeAgreement]:
    found = []
    for judge in source.judges:
        compared = agreed = 0
        for v in votes:
            verdict = judge.verdicts.get(v.row) if v.task == judge.of_task else None
            if verdict is not None:
                compared += 1
                agreed += verdict == vote_verdict(vote=v.vote, challenger_side=v.challenger_side)
        found.append(
            JudgeAgreement(
                suite=judge.suite,
                task=judge.task,
                of_task=judge.of_task,
                job_id=judge.job_id,
                pairs=len(judge.verdicts),
                tally=Tally.of(judge.verdicts.values()),
                compared=compared,
                agreed=agreed,
            )
        )
    return found


def review_context(*, promotion: Promotion, user: User, offset: int = 0) -> ReviewContext | None:
    """What ``evidence/_review.html`` shows ``user`` as ``review``: the prompts to vote on, the
    tally once voted. None when the promotion has no suite answers to compare."""
    context = review_build(promotion=promotion, user=user, offset=offset)
    if not context.total and not context.tally.votes:
        return None
    return context


def review_summary(*, promotion: Promotion) -> dict[str, Any]:
    """The votes as a model card cites them: the tally and the SHA-256 of the votes' canonical JSON.

    Reads committed rows only (no network), so it can run inside the decision's transaction.
    """
    votes = list(vote_list(promotion=promotion).order_by("task", "row", "voter__username", "pk"))
    rows = [vote_export_row(v) for v in votes]
    canonical = json.dumps(rows, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    tally = Tally.of(vote_verdict(vote=v.vote, challenger_side=v.challenger_side) for v in votes)
    return tally.as_dict() | {"digest": hashlib.sha256(canonical.encode()).hexdigest()}


EXPORT_COLUMNS = ("task", "row", "voter", "vote", "challenger_side", "verdict", "at")


def vote_export_row(vote: ReviewVote) -> dict[str, Any]:
    return {
        "task": vote.task,
        "row": vote.row,
        "voter": vote.voter.username,
        "vote": vote.vote,
        "challenger_side": vote.challenger_side,
        "verdict": vote_verdict(vote=vote.vote, challenger_side=vote.challenger_side),
        "at": vote.at.isoformat(),
    }


def vote_export_rows(*, promotion: Promotion, user: User) -> QuerySet[ReviewVote]:
    """The votes ``user`` may export: everyone's once the promotion is decided; before, only their
    own (anyone else's would tell them the sides of prompts they have not voted on)."""
    votes = vote_list(promotion=promotion)
    if PromotionStatus(promotion.status).is_open:
        votes = votes.filter(voter=user)
    return votes
