"""Reads of training: jobs, queue positions, metrics, logs, usage, workers, and a job's estimate."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import (
    Count,
    Exists,
    F,
    FilteredRelation,
    FloatField,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Sum,
    prefetch_related_objects,
)
from django.utils import timezone

from controlplane import tracking
from controlplane.accounts.models import Project, Role, User
from controlplane.accounts.selectors import project_list, project_role_check
from controlplane.datasets.models import DatasetVersion
from controlplane.datasets.tokenizers import TokenizerRef
from controlplane.errors import NotFound, ServiceUnavailable, ValidationFailed
from controlplane.training.models import (
    BaseModel,
    Job,
    JobKind,
    JobMetricValue,
    JobParam,
    JobStatus,
    JobTag,
    Worker,
    broker_priority,
)
from controlplane.training.preflight import job_preflight
from workers.engine.estimate import EstimateError, training_estimate
from workers.spec import DatasetSchema, TrainingConfig
from workers.uris import ModelSource, UriRefused, UriScope, model_uri_check


def job_list(*, project: Project) -> QuerySet[Job]:
    return Job.objects.filter(project=project).select_related(
        "project", "created_by", "base_model", "dataset_version__dataset"
    )


def evaluable_job_list(*, project: Project) -> QuerySet[Job]:
    """The project's finetunes an evaluate job can score: succeeded, with an adapter or a model."""
    return (
        Job.objects.filter(project=project, kind=JobKind.FINETUNE, status=JobStatus.SUCCEEDED)
        .filter(Q(artifacts__has_key="adapter") | Q(artifacts__has_key="model"))
        .select_related("base_model")
    )


def job_get(*, user: User, job_id: int, role: Role = Role.VIEWER) -> Job:
    job = (
        Job.objects.select_related("project", "created_by", "base_model", "dataset_version__dataset")
        .filter(pk=job_id)
        .first()
    )
    if job is None:
        raise NotFound("Not found.")
    project_role_check(user=user, project=job.project, role=role)
    return job


def job_queue_position(*, job: Job) -> int | None:
    """1 for the next queued job of its queue to go; None once it is claimed.

    Workers take messages by broker priority band (see ``models.broker_priority``);
    within a band, jobs held back by the control plane go by priority, then age,
    and the broker keeps the order they were sent in, which is close to that.
    """
    if job.status != JobStatus.QUEUED:
        return None
    mine = (broker_priority(job.priority), -job.priority, job.created_at, job.pk)
    queued = Job.objects.filter(status=JobStatus.QUEUED, queue=job.queue).exclude(pk=job.pk)
    ahead = sum(
        (broker_priority(priority), -priority, created_at, pk) < mine
        for priority, created_at, pk in queued.values_list("priority", "created_at", "pk")
    )
    return ahead + 1


def job_start_estimate(*, job: Job, position: int | None) -> timedelta | None:
    """When a queued job may start, from the progress of the jobs it waits behind.

    Each running job of the same queue (of the same project, when the job
    waits for its project's quota) is expected to need as long again as its
    elapsed time scaled by what is left, (1 - p) / p. The job at position N
    starts when the N-th of them ends. None when nothing running says enough.
    """
    if position is None:
        return None
    running = Job.objects.filter(
        status=JobStatus.RUNNING, queue=job.queue, progress__gt=0, started_at__isnull=False
    )
    if job.waiting_reason:
        running = running.filter(project=job.project)
    now = timezone.now()
    remaining = sorted(
        (now - started) * ((1 - progress) / progress)
        for started, progress in running.values_list("started_at", "progress")
        if started is not None  # always: the query keeps started jobs only
    )
    if len(remaining) < position:
        return None
    return remaining[position - 1]


def job_metric_series(*, job: Job) -> dict[str, dict[str, list[float]]]:
    """Each metric as {"steps": [...], "values": [...]}, for charts: one curve across attempts.

    An attempt that resumed from a checkpoint continues the curve of the ones
    before it; points of earlier attempts from the steps it ran again are replaced.
    """
    by_name: dict[str, dict[int, float]] = {}
    points = job.metric_points.values_list("name", "attempt", "step", "value")
    first_step = dict(
        job.metric_points.order_by()
        .values("attempt")
        .annotate(first=Min("step"))
        .values_list("attempt", "first")
    )
    for name, attempt, step, value in points.order_by("attempt", "step"):
        curve = by_name.setdefault(name, {})
        if attempt > 1 and step == first_step.get(attempt):
            # A new attempt: drop what earlier attempts reported from this step on.
            for stale in [s for s in curve if s >= step]:
                del curve[stale]
        curve[step] = value
    return {
        name: {"steps": sorted(curve), "values": [curve[step] for step in sorted(curve)]}
        for name, curve in sorted(by_name.items())
    }


def job_log_tail(*, job: Job, limit: int = 200) -> list[str]:
    lines = job.log_lines.filter(attempt=job.attempt).order_by("-pk").values_list("text", flat=True)
    return list(reversed(lines[:limit]))


def job_log_page(*, job: Job, attempt: int, after: int = 0, limit: int = 1000) -> list[tuple[int, str]]:
    """Log lines of one attempt after the cursor ``after`` (a line id), oldest first."""
    lines = job.log_lines.filter(attempt=attempt, pk__gt=after).order_by("pk")
    return list(lines.values_list("pk", "text")[:limit])


def base_model_get(*, project: Project, base_model_id: int) -> BaseModel:
    base_model = BaseModel.objects.filter(pk=base_model_id, project=project).first()
    if base_model is None:
        raise NotFound(f"No base model {base_model_id} in project {project.slug}.")
    return base_model


def dataset_version_get(*, project: Project, dataset_version_id: int) -> DatasetVersion:
    """A dataset version of ``project``, with its dataset (its name is part of a job's name)."""
    version = (
        DatasetVersion.objects.select_related("dataset__project")
        .filter(pk=dataset_version_id, dataset__project=project)
        .first()
    )
    if version is None:
        raise NotFound(f"No dataset version {dataset_version_id} in project {project.slug}.")
    return version


def base_model_uri_check(*, project: Project, uri: str) -> ModelSource:
    """What ``uri`` names, if a base model of ``project`` may be loaded from it (the rule of
    ``workers.uris``); else ValidationFailed naming the rule it breaks. A ``runs:/`` URI costs an
    MLflow call: never inside a transaction."""
    scope = UriScope.of_project(project.slug, settings.MODEL_URI_ROOTS)
    try:
        return model_uri_check(uri, scope, tracking.run_experiment_name)
    except UriRefused as exc:
        raise ValidationFailed(str(exc), details={"field": "uri", "rule": exc.rule.value}) from exc


def objective_dataset_check(*, config: TrainingConfig, dataset_version: DatasetVersion) -> None:
    """Refuse an objective the dataset version's rows cannot feed (DPO on anything but preference
    pairs) now, rather than on a worker once the job has waited its turn."""
    objective = config.objective
    if objective.preference_data and dataset_version.format != DatasetSchema.PREFERENCE:
        raise ValidationFailed(
            f"The {objective.name} objective learns from preference rows (prompt, chosen, rejected); "
            f"dataset version {dataset_version} holds {dataset_version.format} rows."
        )


def base_model_tokenizer_ref(project: Project, base_model_id: int) -> TokenizerRef | None:
    """For the datasets' uploads: the tokenizer of ``project``'s base model ``base_model_id``, if any."""
    found = BaseModel.objects.filter(pk=base_model_id, project=project).values_list("name", "uri").first()
    return TokenizerRef(base_model_id=base_model_id, name=found[0], uri=found[1]) if found else None


def base_model_list(*, project: Project) -> QuerySet[BaseModel]:
    return BaseModel.objects.filter(project=project).select_related("project")


def worker_list(*, user: User) -> list[dict]:
    """Every worker, with the running jobs this user may see (others are only counted).

    The fleet is shared by every project, so a member of any project sees all of
    it (what waits for a GPU depends on it); someone in no project sees nothing.
    """
    if not project_list(user=user).exists():
        raise NotFound("Not found.")
    offline_after = timezone.now() - timedelta(seconds=settings.WORKER_OFFLINE_AFTER_SECONDS)
    workers = list(Worker.objects.all())
    running = {job_id for worker in workers for job_id in worker.running_job_ids}
    jobs = Job.objects.filter(pk__in=running, project__in=project_list(user=user)).select_related("project")
    visible = {job.pk: job for job in jobs}
    return [
        {
            "worker": worker,
            "online": worker.last_seen >= offline_after,
            "jobs": [visible[i] for i in worker.running_job_ids if i in visible],
            "hidden_jobs": sum(1 for i in worker.running_job_ids if i not in visible),
        }
        for worker in workers
    ]


def usage_by_user(*, project: Project, days: int) -> list[dict]:
    """Jobs, run-hours and GPU-hours per person in the last ``days`` days, largest first."""
    since = timezone.now() - timedelta(days=days)
    rows = (
        Job.objects.filter(project=project, created_at__gte=since)
        .values("created_by__username")
        .annotate(
            jobs=Count("pk"),
            total_run_seconds=Sum("run_seconds"),
            total_gpu_seconds=Sum(F("gpus") * F("run_seconds"), output_field=FloatField()),
        )
        .order_by("-total_gpu_seconds", "-total_run_seconds", "created_by__username")
    )
    return [
        {
            "user": row["created_by__username"],
            "jobs": row["jobs"],
            "run_hours": round((row["total_run_seconds"] or 0) / 3600, 4),
            "gpu_hours": round((row["total_gpu_seconds"] or 0) / 3600, 4),
        }
        for row in rows
    ]


# Text in English with a BPE tokenizer runs about four bytes to a token; used
# only when the dataset's upload counted no tokens.
BYTES_PER_TOKEN = 4


def job_estimate(
    *, project: Project, user: User, base_model_id: int, dataset_version_id: int, config: TrainingConfig
) -> dict:
    """What a job launched with these inputs would need: parameters, memory per GPU, tokens, steps.

    Checks what ``job_create`` checks, so an estimate that answers means a
    launch would be accepted. Reads only the base model's config.json, and
    says in ``notes`` where each number it could not measure came from.
    """
    project_role_check(user=user, project=project, role=Role.MEMBER)
    training = config
    base_model = base_model_get(project=project, base_model_id=base_model_id)
    version = dataset_version_get(project=project, dataset_version_id=dataset_version_id)
    objective_dataset_check(config=training, dataset_version=version)
    notes: list[str] = []
    tokens_per_row = _tokens_per_row(version, notes)
    gpu_memory = (
        _queue_gpu_memory_bytes(training.resources.queue_name, notes) if training.resources.gpus else None
    )
    try:
        estimate = training_estimate(
            _base_model_config(project, base_model, notes),
            training,
            dataset_rows=version.row_count,
            tokens_per_row=tokens_per_row,
            gpu_memory_bytes=gpu_memory,
            notes=notes,
        )
    except EstimateError as exc:
        raise ValidationFailed(f"Cannot estimate this job: {exc}.") from exc
    # What the launch would say (or refuse), said here too.
    warnings = job_preflight(base_model=base_model, dataset_version=version, config=training)
    return estimate.as_dict() | {"warnings": warnings}


def _base_model_config(project: Project, base_model: BaseModel, notes: list[str]) -> dict | None:
    try:
        # A row stored before the rule, or a root since removed: nothing is read from where it points.
        base_model_uri_check(project=project, uri=base_model.uri)
        config = tracking.model_config_read(base_model.uri)
    except ValidationFailed as exc:
        notes.append(f"{exc.message} No parameters or memory.")
        return None
    except (ServiceUnavailable, OSError, ValueError) as exc:
        notes.append(
            f"the base model's config.json could not be read ({str(exc)[:200]}): no parameters or memory"
        )
        return None
    if config is None:
        notes.append(
            f"the base model {base_model.uri!r} is not in the artifact store and the control plane does not "
            "download models: no parameters or memory"
        )
    elif not isinstance(config, dict):
        notes.append("the base model's config.json is not a JSON object: no parameters or memory")
        return None
    return config


def _tokens_per_row(version: DatasetVersion, notes: list[str]) -> float:
    tokens = version.stats.get("tokens") or {}
    if tokens.get("mean"):
        notes.append(
            f"tokens per row: {tokens['mean']:.0f}, the mean of {tokens.get('sampled_rows', '?')} rows "
            "counted at upload with the tokenizer chosen then"
        )
        return float(tokens["mean"])
    text_bytes = (version.stats.get("bytes") or {}).get("mean")
    if not text_bytes:
        # The stored Parquet's size: compressed, so this undercounts.
        text_bytes = version.size_bytes / max(version.row_count, 1)
    notes.append(f"tokens per row: about {BYTES_PER_TOKEN} bytes of text per token (no tokens were counted)")
    return float(text_bytes) / BYTES_PER_TOKEN


def _queue_gpu_memory_bytes(queue: str, notes: list[str]) -> int | None:
    """The smallest GPU among the online workers serving ``queue``: the job may land on any of them."""
    online_since = timezone.now() - timedelta(seconds=settings.WORKER_OFFLINE_AFTER_SECONDS)
    sizes = [
        gpu["memory_total_mb"]
        for worker in Worker.objects.filter(last_seen__gte=online_since)
        if queue in worker.queues
        for gpu in worker.gpus
        if gpu.get("memory_total_mb")
    ]
    if not sizes:
        notes.append(f"no online worker of queue {queue!r} reports its GPUs: whether the job fits is unknown")
        return None
    return min(sizes) * 1024**2


# --- the runs table: one search for the page and GET /api/v1/jobs -------------------------------

RUNS_PAGE_DEFAULT = 50
RUNS_PAGE_MAX = 200
# What the runs table sorts by besides final metrics (``metric.<name>``) and parameters (``param.<name>``).
JOB_SORT_FIELDS = {
    "created_at": "created_at",
    "name": "name",
    "status": "status",
    "run_seconds": "run_seconds",
}
SUMMARY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,99}")


@dataclass(frozen=True)
class ValueRange:
    """A final metric's (or a parameter's) bounds, both inclusive; None: open on that side."""

    name: str
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class JobFilters:
    status: tuple[JobStatus, ...] = ()
    kind: tuple[str, ...] = ()
    method: str = ""
    dataset: int | None = None  # a Dataset's id: any of its versions
    dataset_version: int | None = None
    base_model: int | None = None
    creator: str = ""  # a username
    tag: str = ""
    created_after: datetime | None = None
    created_before: datetime | None = None
    metrics: tuple[ValueRange, ...] = ()
    params: tuple[ValueRange, ...] = ()
    q: str = ""  # in the name or the notes, any case


@dataclass(frozen=True)
class JobOrder:
    """``created_at``, ``name``, ``status``, ``run_seconds``, ``metric.<name>`` or ``param.<name>``;
    ``descending`` for the largest first. Ties go by id, in the same direction."""

    key: str = "created_at"
    descending: bool = True

    @classmethod
    def parse(cls, text: str) -> JobOrder:
        descending = text.startswith("-")
        key = text.removeprefix("-")
        summary, _, name = key.partition(".")
        if key in JOB_SORT_FIELDS or (summary in ("metric", "param") and SUMMARY_NAME.fullmatch(name)):
            return cls(key=key, descending=descending)
        raise ValidationFailed(
            f"ordering: {text[:120]!r} is not a sort; use created_at, name, status, run_seconds, "
            "metric.<name> or param.<name>, with '-' before it for descending."
        )

    @property
    def text(self) -> str:
        return f"-{self.key}" if self.descending else self.key

    @property
    def summary(self) -> tuple[type[JobMetricValue] | type[JobParam], str] | None:
        kind, _, name = self.key.partition(".")
        if kind == "metric":
            return JobMetricValue, name
        if kind == "param":
            return JobParam, name
        return None


@dataclass
class JobPage:
    jobs: list[Job]
    next_cursor: str | None
    order: JobOrder = field(default_factory=JobOrder)


def _cursor_encode(order: JobOrder, phase: int, value: Any, pk: int) -> str:
    if isinstance(value, datetime):
        value = value.isoformat()
    raw = json.dumps([order.text, phase, value, pk], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _cursor_decode(cursor: str, order: JobOrder) -> tuple[int, Any, int]:
    """(phase, sort value, id) of an opaque cursor made for ``order``; else ValidationFailed."""
    refusal = ValidationFailed("cursor: not a cursor this list gave (ask for the first page again).")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        text, phase, value, pk = json.loads(raw)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise refusal from exc
    if text != order.text:
        raise ValidationFailed("cursor: it was made for another ordering; ask for the first page again.")
    if phase not in (0, 1) or not isinstance(pk, int) or isinstance(pk, bool) or not 0 < pk <= 2**63 - 1:
        raise refusal
    if order.key == "created_at" and phase == 0:
        try:
            value = datetime.fromisoformat(value)
        except (TypeError, ValueError) as exc:
            raise refusal from exc
    elif order.key in ("name", "status") and not isinstance(value, str):
        raise refusal
    elif order.key not in ("created_at", "name", "status") and phase == 0:
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise refusal
    return phase, value, pk


def _range_exists(model: type[JobMetricValue] | type[JobParam], bounds: ValueRange) -> Exists:
    rows = model.objects.filter(job=OuterRef("pk"), name=bounds.name)
    if bounds.low is not None:
        rows = rows.filter(value__gte=bounds.low)
    if bounds.high is not None:
        rows = rows.filter(value__lte=bounds.high)
    return Exists(rows)


def _filtered(jobs: QuerySet[Job], filters: JobFilters) -> QuerySet[Job]:
    f = filters
    if f.status:
        jobs = jobs.filter(status__in=f.status)
    if f.kind:
        jobs = jobs.filter(kind__in=f.kind)
    if f.method:
        jobs = jobs.filter(config__method__name=f.method)
    if f.dataset is not None:
        jobs = jobs.filter(dataset_version__dataset_id=f.dataset)
    if f.dataset_version is not None:
        jobs = jobs.filter(dataset_version_id=f.dataset_version)
    if f.base_model is not None:
        jobs = jobs.filter(base_model_id=f.base_model)
    if f.creator:
        jobs = jobs.filter(created_by__username=f.creator)
    if f.tag:
        jobs = jobs.filter(Exists(JobTag.objects.filter(job=OuterRef("pk"), name=f.tag)))
    if f.created_after is not None:
        jobs = jobs.filter(created_at__gte=f.created_after)
    if f.created_before is not None:
        jobs = jobs.filter(created_at__lt=f.created_before)
    for bounds in f.metrics:
        jobs = jobs.filter(_range_exists(JobMetricValue, bounds))
    for bounds in f.params:
        jobs = jobs.filter(_range_exists(JobParam, bounds))
    if f.q:
        jobs = jobs.filter(Q(name__icontains=f.q) | Q(notes__icontains=f.q))
    return jobs


def _after(field_name: str, value: Any, pk: int, descending: bool) -> Q:
    """Rows after (value, pk) in the order (field, id), both ascending or both descending.

    The redundant bound on the field alone lets the database start its index scan at the cursor.
    """
    op = "lt" if descending else "gt"
    bound = "lte" if descending else "gte"
    return Q(**{f"{field_name}__{bound}": value}) & (
        Q(**{f"{field_name}__{op}": value}) | Q(**{field_name: value, f"pk__{op}": pk})
    )


def job_search(
    *,
    user: User,
    project: Project | None = None,
    filters: JobFilters | None = None,
    order: JobOrder | None = None,
    cursor: str = "",
    limit: int = RUNS_PAGE_DEFAULT,
) -> JobPage:
    """One page of the jobs (finetunes, evaluations, sweep trials and drivers) ``user`` may see.

    In ``project`` (a project the caller loaded with ``project_get``, so the
    reader's role is checked) or, when None, in every project ``user`` is a member
    of. Keyset pagination: ``next_cursor`` carries the last row's sort value and
    id, so each page costs the same however deep it is, and a walk from the
    first page on meets every job exactly once (rows added meanwhile may or may
    not show). Sorted by a metric or a parameter, the jobs that have it come
    first (phase 0, by its value), then those without it (phase 1, newest first).
    A fixed number of queries: at most two for the rows, one for their tags.
    """
    filters, order = filters or JobFilters(), order or JobOrder()
    if not 1 <= limit <= RUNS_PAGE_MAX:
        raise ValidationFailed(f"limit: from 1 to {RUNS_PAGE_MAX}.")
    scope = Q(project=project) if project is not None else Q(project__in=project_list(user=user))
    jobs = _filtered(Job.objects.filter(scope), filters)
    phase, value, after_pk = _cursor_decode(cursor, order) if cursor else (0, None, None)
    rows: list[tuple[int, Any, Job]] = []
    summary = order.summary
    if summary is None:
        field_name = JOB_SORT_FIELDS[order.key]
        page = jobs
        if after_pk is not None:
            page = page.filter(_after(field_name, value, after_pk, order.descending))
        sign = "-" if order.descending else ""
        page = page.order_by(f"{sign}{field_name}", f"{sign}pk")
        rows = [(0, getattr(job, field_name), job) for job in _with_relations(page)[: limit + 1]]
    else:
        model, name = summary
        relation = "metric_values" if model is JobMetricValue else "param_values"
        if phase == 0:
            # The summary's own project column is filtered too: its index (project, name, value,
            # job) then hands out the rows in order, and the first page reads only its rows.
            summary_scope = (
                Q(_sort__project=project)
                if project is not None
                else Q(_sort__project__in=project_list(user=user))
            )
            page = jobs.annotate(_sort=FilteredRelation(relation, condition=Q(**{f"{relation}__name": name})))
            page = page.filter(summary_scope, _sort__value__isnull=False).annotate(
                _sort_value=F("_sort__value")
            )
            if after_pk is not None:
                page = page.filter(_after("_sort__value", value, after_pk, order.descending))
            sign = "-" if order.descending else ""
            page = page.order_by(f"{sign}_sort__value", f"{sign}_sort__job_id")
            # _sort_value: the annotation above (the summary's value, by which the page is sorted).
            rows = [
                (0, job._sort_value, job)  # type: ignore[attr-defined]
                for job in _with_relations(page)[: limit + 1]
            ]
        if len(rows) <= limit:
            # Then the jobs without it, newest first.
            missing = jobs.exclude(Exists(model.objects.filter(job=OuterRef("pk"), name=name)))
            if phase == 1 and after_pk is not None:
                missing = missing.filter(pk__lt=after_pk)
            missing = missing.order_by("-pk")
            rows += [(1, None, job) for job in _with_relations(missing)[: limit + 1 - len(rows)]]
    more = len(rows) > limit
    rows = rows[:limit]
    page_jobs = [job for _, _, job in rows]
    prefetch_related_objects(page_jobs, "tags")
    next_cursor = _cursor_encode(order, rows[-1][0], rows[-1][1], rows[-1][2].pk) if more else None
    return JobPage(jobs=page_jobs, next_cursor=next_cursor, order=order)


def _with_relations(jobs: QuerySet[Job]) -> QuerySet[Job]:
    return jobs.select_related("project", "created_by", "base_model", "dataset_version__dataset")


def job_summary_names(
    *, user: User, project: Project | None = None, recent: int = 200
) -> dict[str, list[str]]:
    """The final metrics and numeric parameters of the ``recent`` newest jobs in scope, by name:
    the columns the runs table offers. Bounded: never a scan of every job."""
    scope = Q(project=project) if project is not None else Q(project__in=project_list(user=user))
    newest = Job.objects.filter(scope).order_by("-created_at", "-pk").values("pk")[:recent]
    return {
        "metrics": sorted(
            set(JobMetricValue.objects.filter(job__in=newest).values_list("name", flat=True).distinct())
        ),
        "params": sorted(
            set(JobParam.objects.filter(job__in=newest).values_list("name", flat=True).distinct())
        ),
    }
