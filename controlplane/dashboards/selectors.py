"""Reads of the dashboards: every table and series a manager sees, for some projects and a date range.

Each table is built by one function from a bounded number of queries (one or
two each) over the pre-aggregates (``FinishedJob``, ``WorkerHour``) or over the
jobs that are live or were waiting in the range, so a page costs the same
number of queries at 100 jobs as at 10,000.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Any

from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDay, TruncHour, TruncWeek
from django.urls import reverse
from django.utils import timezone

from controlplane.accounts.models import Project
from controlplane.dashboards.models import FinishedJob, GpuPrice, WorkerHour
from controlplane.errors import ValidationFailed
from controlplane.registry.models import Deployment, Promotion
from controlplane.training.models import Job, JobStatus
from workers.spec import JobKind

PRESET_DAYS = (7, 30, 90)
DEFAULT_DAYS = 30
MAX_DAYS = 366
LIVE_ROWS = 100
RECENT_ROWS = 20
TOP_FAILURES = 10
# Up to this many days the charts go by the hour; past it, by the day.
HOURLY_UP_TO_DAYS = 3
LIVE = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELLING)
# Evaluation metrics where less is better; every other metric is better higher.
LOWER_IS_BETTER = ("loss", "perplexity", "error")


# --- the date range -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DateRange:
    """Whole days in UTC, ``first`` to ``last`` inclusive."""

    first: date
    last: date

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, datetime.min.time(), tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """Exclusive: midnight after ``last``."""
        return self.start + timedelta(days=self.days)

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    @property
    def hourly(self) -> bool:
        return self.days <= HOURLY_UP_TO_DAYS

    @property
    def step(self) -> timedelta:
        return timedelta(hours=1) if self.hourly else timedelta(days=1)

    def query(self) -> str:
        return f"from={self.first.isoformat()}&to={self.last.isoformat()}"


def date_range_default(today: date | None = None, days: int = DEFAULT_DAYS) -> DateRange:
    today = today or timezone.now().astimezone(UTC).date()
    return DateRange(first=today - timedelta(days=days - 1), last=today)


def _day(raw: str, name: str) -> date:
    try:
        if len(raw) != 10:
            raise ValueError
        return date.fromisoformat(raw)
    except ValueError:
        raise ValidationFailed(f"{name} must be a date as YYYY-MM-DD, not {raw[:40]!r}.") from None


def date_range_parse(query: dict[str, str], today: date | None = None) -> DateRange:
    """The range a query string asks for: ``days`` (a preset) or ``from``/``to``; the default 30 days."""
    today = today or timezone.now().astimezone(UTC).date()
    days = query.get("days", "")
    if days:
        if days not in {str(d) for d in PRESET_DAYS}:
            raise ValidationFailed(f"days must be one of {', '.join(map(str, PRESET_DAYS))}.")
        return date_range_default(today, int(days))
    raw_first, raw_last = query.get("from", ""), query.get("to", "")
    if not raw_first and not raw_last:
        return date_range_default(today)
    last = _day(raw_last, "to") if raw_last else today
    first = _day(raw_first, "from") if raw_first else last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise ValidationFailed("from must not be after to.")
    if (last - first).days + 1 > MAX_DAYS:
        raise ValidationFailed(f"A range is at most {MAX_DAYS} days.")
    return DateRange(first=first, last=last)


# --- tables ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """A cell that links somewhere on the page; its CSV value is its text."""

    text: Any
    href: str

    def __str__(self) -> str:
        return str(self.text)


@dataclass
class Table:
    name: str
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    empty: str = "Nothing in this range."


@dataclass
class Scope:
    """Whose data and which days: the projects a reader may see and a date range."""

    projects: list[Project]
    dates: DateRange

    @cached_property
    def project_ids(self) -> list[int]:
        return [p.pk for p in self.projects]

    @cached_property
    def _price_rows(self) -> list[tuple[str, Decimal, str]]:
        return list(GpuPrice.objects.values_list("gpu_model", "price_per_hour", "currency"))

    @property
    def prices(self) -> dict[str, Decimal]:
        return {model: price for model, price, _ in self._price_rows}

    @property
    def currency(self) -> str:
        # One currency for the whole price list: the first one an admin set.
        return self._price_rows[0][2] if self._price_rows else "USD"

    def finished(self) -> QuerySet[FinishedJob]:
        return FinishedJob.objects.filter(
            project_id__in=self.project_ids, finished_at__gte=self.dates.start, finished_at__lt=self.dates.end
        )

    def cost(self, gpu_hours_by_model: dict[str, float]) -> float | None:
        """GPU-hours priced by model; None when no hour of it has a price."""
        priced = [
            float(self.prices[model]) * hours
            for model, hours in gpu_hours_by_model.items()
            if model in self.prices
        ]
        return round(sum(priced), 2) if priced else None


def _job_link(job_id: int, text: Any = None) -> Link:
    return Link(text if text is not None else f"#{job_id}", reverse("job", args=[job_id]))


def _hours(seconds: float | None) -> float:
    return round((seconds or 0) / 3600, 2)


def _when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if at else ""


def live_table(scope: Scope) -> Table:
    """What runs and waits now (whatever the range): the oldest waiting first."""
    jobs = (
        Job.objects.filter(project_id__in=scope.project_ids, status__in=LIVE)
        .select_related("project", "created_by")
        .only(
            "pk",
            "name",
            "status",
            "kind",
            "queue",
            "gpus",
            "created_at",
            "started_at",
            "waiting_reason",
            "project__slug",
            "created_by__username",
        )
        .order_by("status", "created_at")[:LIVE_ROWS]
    )
    now = timezone.now()
    rows = []
    for job in jobs:
        since = job.started_at if job.status != JobStatus.QUEUED and job.started_at else job.created_at
        rows.append(
            [
                _job_link(job.pk),
                job.name,
                job.project.slug,
                job.created_by.username,
                job.status,
                job.kind,
                job.queue,
                job.gpus,
                round((now - since).total_seconds() / 60, 1),
                job.waiting_reason,
            ]
        )
    return Table(
        "live",
        "Running and waiting now",
        ["Job", "Name", "Project", "Person", "Status", "Kind", "Queue", "GPUs", "Minutes", "Why waiting"],
        rows,
        empty="Nothing runs or waits now.",
    )


def live_counts(scope: Scope) -> dict[str, int]:
    counts = dict(
        Job.objects.filter(project_id__in=scope.project_ids, status__in=LIVE)
        .values_list("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    return {
        "queued": counts.get(JobStatus.QUEUED, 0),
        "running": counts.get(JobStatus.RUNNING, 0) + counts.get(JobStatus.CANCELLING, 0),
    }


def _buckets(dates: DateRange) -> list[datetime]:
    step, at, out = dates.step, dates.start, []
    while at < dates.end:
        out.append(at)
        at += step
    return out


def _per_bucket(rows: QuerySet, buckets: list[datetime], value: str) -> list[Any]:
    """A grouped query's ``value`` by bucket (``at``), in the buckets' order; None where it has none."""
    found = {row["at"]: row[value] for row in rows}
    return [found.get(at) for at in buckets]


def queue_series(scope: Scope) -> dict[str, list]:
    """Queue depth at the end of each hour or day, and the mean wait of the jobs that started in it.

    Counted in the database, per bucket: the jobs that joined the queue and those that left it
    (started, or ended without starting), from the depth at the range's start; four small
    grouped queries whatever the number of jobs.
    """
    start, end = scope.dates.start, scope.dates.end
    trunc = TruncHour if scope.dates.hourly else TruncDay
    jobs = Job.objects.filter(project_id__in=scope.project_ids).order_by()
    buckets = _buckets(scope.dates)
    left_at = Coalesce("started_at", "finished_at")
    waiting_at_start = jobs.filter(created_at__lt=start).filter(
        Q(started_at__gte=start) | Q(started_at__isnull=True, finished_at__isnull=True)
        | Q(started_at__isnull=True, finished_at__gte=start)
    ).count()  # fmt: skip
    joined = _per_bucket(
        jobs.filter(created_at__gte=start, created_at__lt=end)
        .annotate(at=trunc("created_at", tzinfo=UTC))
        .values("at")
        .annotate(n=Count("pk")),
        buckets,
        "n",
    )
    left = _per_bucket(
        jobs.annotate(left_at=left_at)
        .filter(left_at__gte=start, left_at__lt=end)
        .annotate(at=trunc("left_at", tzinfo=UTC))
        .values("at")
        .annotate(n=Count("pk")),
        buckets,
        "n",
    )
    waits = (
        jobs.filter(started_at__gte=start, started_at__lt=end)
        .annotate(at=trunc("started_at", tzinfo=UTC))
        .values("at")
        .annotate(
            n=Count("pk"),
            wait=Sum(ExpressionWrapper(F("started_at") - F("created_at"), output_field=DurationField())),
        )
    )
    wait_by = {row["at"]: row["wait"].total_seconds() / row["n"] for row in waits if row["wait"] is not None}
    depth, queued = [], waiting_at_start
    for came, went in zip(joined, left, strict=True):
        queued += (came or 0) - (went or 0)
        depth.append(queued)
    return {
        "t": [b.isoformat() for b in buckets],
        "depth": depth,
        "wait_minutes": [round(max(wait_by[b], 0) / 60, 2) if b in wait_by else None for b in buckets],
    }


def queue_table(series: dict[str, list]) -> Table:
    hourly = len(series["t"]) > 1 and series["t"][0][:10] == series["t"][1][:10]
    rows = [
        [t[:16].replace("T", " ") if hourly else t[:10], depth, wait]
        for t, depth, wait in zip(series["t"], series["depth"], series["wait_minutes"], strict=True)
    ]
    return Table("queue", "Queue over time", ["From (UTC)", "Queued at its end", "Mean wait (min)"], rows)


def _usage_by(scope: Scope, key: Any, title: str, name: str, label: str) -> Table:
    """GPU-hours and cost grouped by one column, each GPU model priced by its own price."""
    rows = (
        scope.finished()
        .values(key, "gpu_model")
        .annotate(jobs=Count("pk"), run=Sum("run_seconds"), gpu_hours=Sum("gpu_hours"))
    )
    grouped: dict[Any, dict[str, Any]] = {}
    for row in rows:
        entry = grouped.setdefault(row[key], {"jobs": 0, "run": 0.0, "gpu_hours": 0.0, "by_model": {}})
        entry["jobs"] += row["jobs"]
        entry["run"] += row["run"] or 0.0
        entry["gpu_hours"] += row["gpu_hours"] or 0.0
        entry["by_model"][row["gpu_model"]] = row["gpu_hours"] or 0.0
    ordered = sorted(grouped.items(), key=lambda kv: (-kv[1]["gpu_hours"], str(kv[0])))
    table_rows = [
        [
            key_value,
            entry["jobs"],
            _hours(entry["run"]),
            round(entry["gpu_hours"], 2),
            scope.cost(entry["by_model"]),
        ]
        for key_value, entry in ordered
    ]
    return Table(
        name, title, [label, "Jobs", "Run-hours", "GPU-hours", f"Cost ({scope.currency})"], table_rows
    )


def usage_by_project(scope: Scope) -> Table:
    return _usage_by(scope, "project__slug", "GPU-hours and cost per project", "projects", "Project")


def usage_by_person(scope: Scope) -> Table:
    return _usage_by(scope, "created_by__username", "GPU-hours and cost per person", "people", "Person")


def usage_by_week(scope: Scope) -> Table:
    """Per week (from Monday) and project: the chart stacks the projects."""
    rows = (
        scope.finished()
        .annotate(week=TruncWeek("finished_at", tzinfo=UTC))
        .values("week", "project__slug", "gpu_model")
        .annotate(jobs=Count("pk"), gpu_hours=Sum("gpu_hours"))
    )
    grouped: dict[tuple[date, str], dict[str, Any]] = {}
    for row in rows:
        week = row["week"].date() if isinstance(row["week"], datetime) else row["week"]
        entry = grouped.setdefault(
            (week, row["project__slug"]), {"jobs": 0, "gpu_hours": 0.0, "by_model": {}}
        )
        entry["jobs"] += row["jobs"]
        entry["gpu_hours"] += row["gpu_hours"] or 0.0
        entry["by_model"][row["gpu_model"]] = row["gpu_hours"] or 0.0
    table_rows = [
        [week.isoformat(), slug, e["jobs"], round(e["gpu_hours"], 2), scope.cost(e["by_model"])]
        for (week, slug), e in sorted(grouped.items())
    ]
    return Table(
        "weeks",
        "GPU-hours and cost per week",
        ["Week of", "Project", "Jobs", "GPU-hours", f"Cost ({scope.currency})"],
        table_rows,
    )


def outcomes_table(scope: Scope) -> Table:
    counts = dict(scope.finished().values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
    succeeded, failed = counts.get(JobStatus.SUCCEEDED, 0), counts.get(JobStatus.FAILED, 0)
    cancelled = counts.get(JobStatus.CANCELLED, 0)
    rate = round(100 * succeeded / (succeeded + failed), 1) if succeeded + failed else None
    return Table(
        "outcomes",
        "Outcomes",
        ["Finished", "Succeeded", "Failed", "Cancelled", "Success rate (%)"],
        [[succeeded + failed + cancelled, succeeded, failed, cancelled, rate]],
    )


def failures_table(scope: Scope) -> Table:
    rows = (
        scope.finished()
        .filter(status=JobStatus.FAILED)
        .values("failure_reason")
        .annotate(n=Count("pk"))
        .order_by("-n", "failure_reason")[:TOP_FAILURES]
    )
    return Table(
        "failures",
        "Top failure reasons",
        ["Reason (first line of the error)", "Jobs"],
        [[row["failure_reason"] or "(no message)", row["n"]] for row in rows],
        empty="No failures in this range.",
    )


def _lower_is_better(metric: str) -> bool:
    return any(word in metric for word in LOWER_IS_BETTER)


@dataclass(frozen=True)
class Evaluation:
    job_id: int
    source_id: int | None
    source_name: str | None


def leaderboard_table(scope: Scope) -> Table:
    """Per dataset version and metric, the best evaluation finished in the range, and where it is deployed."""
    # Plain values, not models: a long range holds thousands of evaluations.
    evaluations = (
        Job.objects.filter(
            project_id__in=scope.project_ids,
            kind=JobKind.EVALUATE,
            status=JobStatus.SUCCEEDED,
            finished_at__gte=scope.dates.start,
            finished_at__lt=scope.dates.end,
        )
        .order_by("finished_at", "pk")
        .values_list(
            "pk", "metrics", "dataset_version_id", "project__slug", "dataset_version__dataset__name",
            "dataset_version__version", "source_job_id", "source_job__name",
        )
    )  # fmt: skip
    best: dict[tuple[int, str], tuple[float, Evaluation]] = {}
    labels: dict[int, str] = {}
    for job_id, metrics, version_id, slug, dataset, version, source_id, source_name in evaluations:
        if version_id not in labels:
            labels[version_id] = f"{slug}/{dataset} v{version}"
        for metric, value in (metrics or {}).items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            key = (version_id, metric)
            held = best.get(key)
            better = held is None or (value < held[0] if _lower_is_better(metric) else value > held[0])
            if better:  # ties keep the earlier evaluation
                best[key] = (float(value), Evaluation(job_id, source_id, source_name))
    deployed: dict[int, list[str]] = defaultdict(list)
    for job_id, model_name, target in Deployment.objects.filter(project_id__in=scope.project_ids).values_list(
        "model_version__job_id", "model_name", "target"
    ):
        deployed[job_id].append(f"{model_name} in {target}")
    rows = []
    ordered = sorted(best.items(), key=lambda kv: (labels[kv[0][0]], kv[0][1]))
    for (version_id, metric), (value, ev) in ordered:
        rows.append(
            [
                labels[version_id],
                metric,
                "lower" if _lower_is_better(metric) else "higher",
                round(value, 4),
                _job_link(ev.source_id, ev.source_name) if ev.source_id else "base model",
                _job_link(ev.job_id),
                ", ".join(sorted(deployed.get(ev.source_id, []))) if ev.source_id else "",
            ]
        )
    return Table(
        "leaderboard",
        "Leaderboard: the best evaluated model per dataset and metric",
        ["Dataset", "Metric", "Better", "Best", "Model (finetune)", "Evaluation", "Deployed"],
        rows,
        empty="No evaluation finished in this range.",
    )


def promotions_table(scope: Scope) -> Table:
    promotions = (
        Promotion.objects.filter(model_version__project_id__in=scope.project_ids)
        .select_related("model_version__project", "requested_by", "decided_by")
        .order_by("-requested_at", "-pk")[:RECENT_ROWS]
    )
    rows = [
        [
            _when(p.requested_at),
            p.model_version.project.slug,
            f"{p.model_version.name} v{p.model_version.version}",
            _job_link(p.model_version.job_id),
            p.target,
            p.status,
            p.requested_by.username,
            p.decided_by.username if p.decided_by else "",
        ]
        for p in promotions
    ]
    return Table(
        "promotions",
        "Recent promotions",
        ["Asked", "Project", "Model", "From job", "Target", "Status", "Asked by", "Decided by"],
        rows,
        empty="No promotion asked yet.",
    )


def deployments_table(scope: Scope) -> Table:
    deployments = (
        Deployment.objects.filter(project_id__in=scope.project_ids)
        .select_related("project", "model_version", "approved_by")
        .order_by("-approved_at", "-pk")[:RECENT_ROWS]
    )
    rows = [
        [
            _when(d.approved_at),
            d.project.slug,
            d.target,
            f"{d.model_name} v{d.model_version.version}",
            _job_link(d.model_version.job_id),
            d.approved_by.username,
        ]
        for d in deployments
    ]
    return Table(
        "deployments",
        "Deployments",
        ["Approved", "Project", "Target", "Model", "From job", "Approved by"],
        rows,
        empty="Nothing is deployed yet.",
    )


def _worker_hours(scope: Scope) -> QuerySet[WorkerHour]:
    return WorkerHour.objects.filter(hour__gte=scope.dates.start, hour__lt=scope.dates.end)


def _gpu_sums(hours: QuerySet[WorkerHour], *group: str) -> list[dict[str, Any]]:
    """Worker-hours summed per ``group`` (columns or annotations): GPU, busy, idle and weighted seconds."""
    rows: Any = hours.values(*group).annotate(
        gpu=Sum("gpu_seconds"),
        busy=Sum("busy_gpu_seconds"),
        idle=Sum("idle_gpu_seconds"),
        weighted=Sum("utilization_seconds"),
    )
    return list(rows.order_by(*group))


def utilization_series(scope: Scope) -> dict[str, list]:
    """GPU-hours busy and idle (the waste) and mean utilization, per hour or day, over all workers."""
    trunc = TruncHour if scope.dates.hourly else TruncDay
    hours = _worker_hours(scope).annotate(at=trunc("hour", tzinfo=UTC))
    rows: dict[datetime, dict[str, Any]] = {row["at"]: row for row in _gpu_sums(hours, "at")}
    series: dict[str, list] = {"t": [], "busy_gpu_hours": [], "idle_gpu_hours": [], "utilization": []}
    for at in _buckets(scope.dates):
        row = rows.get(at, {})
        series["t"].append(at.isoformat())
        series["busy_gpu_hours"].append(_hours(row.get("busy")))
        series["idle_gpu_hours"].append(_hours(row.get("idle")))
        gpu = row.get("gpu") or 0
        series["utilization"].append(round(row["weighted"] / gpu, 1) if gpu else None)
    return series


def workers_table(scope: Scope) -> Table:
    table_rows = []
    for row in _gpu_sums(_worker_hours(scope), "worker"):
        gpu = row["gpu"] or 0
        table_rows.append(
            [
                row["worker"],
                _hours(gpu),
                _hours(row["busy"]),
                _hours(row["idle"]),
                round(100 * (row["idle"] or 0) / gpu, 1) if gpu else None,
                round(row["weighted"] / gpu, 1) if gpu else None,
            ]
        )
    return Table(
        "workers",
        "Worker and GPU utilisation (all workers)",
        ["Worker", "GPU-hours seen", "Busy GPU-hours", "Idle GPU-hours (waste)", "Idle (%)", "Mean use (%)"],
        table_rows,
        empty="No worker heartbeat in this range.",
    )


# Every table by its CSV name; each builds from its own queries.
TABLES: dict[str, Callable[[Scope], Table]] = {
    "live": live_table,
    "queue": lambda scope: queue_table(queue_series(scope)),
    "projects": usage_by_project,
    "people": usage_by_person,
    "weeks": usage_by_week,
    "outcomes": outcomes_table,
    "failures": failures_table,
    "leaderboard": leaderboard_table,
    "promotions": promotions_table,
    "deployments": deployments_table,
    "workers": workers_table,
}


def dashboard_table(*, scope: Scope, name: str) -> Table:
    build = TABLES.get(name)
    if build is None:
        raise ValidationFailed(f"No table {name[:40]!r}; the tables are {', '.join(TABLES)}.")
    return build(scope)


def dashboard_build(*, scope: Scope) -> dict[str, Any]:
    """Everything a dashboard page shows: its tables and the series its charts draw."""
    queue = queue_series(scope)
    tables = {
        "live": live_table(scope),
        "queue": queue_table(queue),
        "projects": usage_by_project(scope),
        "people": usage_by_person(scope),
        "weeks": usage_by_week(scope),
        "outcomes": outcomes_table(scope),
        "failures": failures_table(scope),
        "leaderboard": leaderboard_table(scope),
        "promotions": promotions_table(scope),
        "deployments": deployments_table(scope),
        "workers": workers_table(scope),
    }
    weeks = tables["weeks"]
    return {
        "tables": tables,
        "counts": live_counts(scope),
        # The per-person chart (pages/usage.js), as the project page's usage card drew it.
        "usage": [
            {"user": row[0], "jobs": row[1], "run_hours": row[2], "gpu_hours": row[3]}
            for row in tables["people"].rows
        ],
        "charts": {
            "queue": queue,
            "weeks": {"columns": weeks.columns, "rows": weeks.rows},
            "utilization": utilization_series(scope),
        },
    }
