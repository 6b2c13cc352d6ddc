"""Where the blind review's answers come from (a selector): the challenger's and the champion's
predictions on the same rows of each generation task of the model's suites, and the judge's
verdicts where a judge task ran. Table reads are network calls: never inside a transaction."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from django.utils import timezone

from controlplane import tracking
from controlplane.errors import DomainError, ServiceUnavailable
from controlplane.evidence.models import Suite, SuiteRun, SuiteRunJob, SuiteRunStatus
from controlplane.evidence.review_tally import (
    VERDICTS,
    Verdict,
)
from controlplane.registry.models import Deployment, ModelVersion, Promotion, PromotionStatus
from controlplane.training.models import Job, JobStatus
from controlplane.training.services.judging import judge_verdicts

# Metrics that score no generated text: a task with only these has no answers to compare.
NOT_GENERATIVE = frozenset({"perplexity", "multiple_choice"})


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
