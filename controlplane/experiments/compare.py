"""The compare page: 2 to 10 runs side by side, all of its state in the URL so it can be shared.

``/compare/?runs=3,7,9&baseline=7&smooth=0.6&log=1&x=time&diff=1``: the runs,
the run the deltas are taken against, the EMA smoothing of the charts (0 to
0.99), a log-scale y axis, the x axis (step, time or tokens) and whether the
parameter table shows only the parameters that differ. The charts apply the
display options in the browser (compare.js), which writes them back into the
URL; the server reads them so a shared link opens as it was left.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, QueryDict
from django.shortcuts import render

from controlplane import tracking
from controlplane.accounts.models import Role
from controlplane.accounts.requests import AuthenticatedHttpRequest
from controlplane.accounts.selectors import project_role_check
from controlplane.errors import NotFound, ServiceUnavailable, ValidationFailed
from controlplane.experiments.series import metric_series
from controlplane.training.models import Job, JobKind, JobStatus

MIN_RUNS = 2
MAX_RUNS = 10
# The charts' colours, one per run in the order of ?runs= (compare.js draws with the same list).
COLOURS = [
    "#3a5bd9",
    "#1f8a4c",
    "#c23b3b",
    "#b7791f",
    "#7c4dbd",
    "#168a8a",
    "#d4568c",
    "#5d6b82",
    "#8a9a1f",
    "#e07b39",
]
X_AXES = ("step", "time", "tokens")
# A metric the trainer may log with the tokens seen so far: the x axis "tokens" needs it in every run.
TOKENS_METRIC = "num_input_tokens_seen"
# Side-by-side evaluation outputs: how many rows, and how much of each text, a page shows.
OUTPUT_ROWS = 50
OUTPUT_TEXT_CHARS = 400


@dataclass(frozen=True)
class CompareQuery:
    job_ids: list[int]
    baseline: int
    smooth: float = 0.0
    log: bool = False
    x: str = "step"
    diff: bool = False


def compare_query_parse(query: QueryDict) -> CompareQuery:
    """The page's state from its URL; a value it cannot take is a ValidationFailed saying which."""
    raw = query.get("runs", "").strip()
    if not raw:
        raise ValidationFailed(f"Choose {MIN_RUNS} to {MAX_RUNS} runs to compare: /compare/?runs=1,2,3.")
    ids: list[int] = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or len(part) > 12:
            raise ValidationFailed(f"'runs' takes job ids separated by commas; {part[:20]!r} is not one.")
        if int(part) not in ids:
            ids.append(int(part))
    if not MIN_RUNS <= len(ids) <= MAX_RUNS:
        raise ValidationFailed(
            f"Compare takes {MIN_RUNS} to {MAX_RUNS} different runs; this link names {len(ids)}."
        )
    baseline_raw = query.get("baseline", "").strip()
    if not baseline_raw:
        baseline = ids[0]
    elif baseline_raw.isdigit() and int(baseline_raw) in ids:
        baseline = int(baseline_raw)
    else:
        raise ValidationFailed(f"The baseline must be one of the compared runs ({', '.join(map(str, ids))}).")
    try:
        smooth = float(query.get("smooth", "0") or 0)
    except ValueError:
        smooth = math.nan
    if not 0 <= smooth <= 0.99:  # NaN fails too
        raise ValidationFailed("Smoothing is a number from 0 (none) to 0.99.")
    x = query.get("x", "step") or "step"
    if x not in X_AXES:
        raise ValidationFailed(f"The x axis is one of {', '.join(X_AXES)}.")
    flags = {}
    for name in ("log", "diff"):
        value = query.get(name, "0") or "0"
        if value not in ("0", "1"):
            raise ValidationFailed(f"'{name}' is 0 or 1.")
        flags[name] = value == "1"
    return CompareQuery(job_ids=ids, baseline=baseline, smooth=smooth, x=x, **flags)


def compare_jobs(*, user: Any, job_ids: Sequence[int]) -> list[Job]:
    """The jobs, in the order asked, if the user may read every one; else NotFound naming the first.

    A job of a project the user is not in is refused exactly like a missing one.
    """
    found = {
        job.pk: job
        for job in Job.objects.filter(pk__in=job_ids).select_related(
            "project", "created_by", "base_model", "dataset_version__dataset", "source_job"
        )
    }
    checked: set[int] = set()
    for job_id in job_ids:
        job = found.get(job_id)
        try:
            if job is None:
                raise NotFound("")
            if job.project_id not in checked:
                project_role_check(user=user, project=job.project, role=Role.VIEWER)
                checked.add(job.project_id)
        except NotFound:
            raise NotFound(f"Job {job_id} was not found, or you cannot see it.") from None
    return [found[job_id] for job_id in job_ids]


# --- the parameter table ---------------------------------------------------------------------------


@dataclass
class ParamRow:
    name: str
    values: list[str]

    @property
    def differs(self) -> bool:
        return len(set(self.values)) > 1


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        flat: dict[str, str] = {}
        for key in sorted(value):
            flat |= _flatten(value[key], f"{prefix}{key}.")
        return flat
    if isinstance(value, list):
        return {prefix[:-1]: ", ".join(str(item) for item in value)}
    return {prefix[:-1]: "" if value is None else str(value)}


def dataset_version_label(job: Job) -> str:
    version = job.dataset_version
    return f"{version.dataset.name}:v{version.version} ({version.sha256[:12]})"


def param_rows(jobs: Sequence[Job]) -> list[ParamRow]:
    """What each run was: kind, method, data, model, every config value; one row per name."""
    described = []
    for job in jobs:
        summary = {
            "kind": job.kind,
            "status": job.status,
            "creator": job.created_by.username,
            "base model": job.base_model.name,
            "dataset version": dataset_version_label(job),
            "evaluated job": f"job {job.source_job_id}" if job.source_job_id else "",
            "steps": str(job.step),
        }
        described.append(summary | _flatten(job.config))
    names = list(dict.fromkeys(name for summary in described for name in summary))
    return [ParamRow(name, [summary.get(name, "") for summary in described]) for name in names]


# --- final and evaluation metrics with deltas --------------------------------------------------------


def lower_is_better(name: str) -> bool:
    return any(word in name.lower() for word in ("loss", "perplexity", "error", "runtime"))


@dataclass
class MetricCell:
    value: float | None
    delta: float | None = None
    percent: float | None = None
    better: bool | None = None


@dataclass
class MetricRow:
    name: str
    cells: list[MetricCell]


def metric_rows(
    names: Sequence[str], values: Sequence[dict[str, float]], baseline_index: int
) -> list[MetricRow]:
    rows = []
    for name in names:
        base = values[baseline_index].get(name)
        cells = []
        for index, run_values in enumerate(values):
            value = run_values.get(name)
            cell = MetricCell(value)
            if value is not None and base is not None and index != baseline_index:
                cell.delta = value - base
                cell.percent = (value - base) / abs(base) * 100 if base else None
                if cell.delta:
                    cell.better = (cell.delta < 0) == lower_is_better(name)
            cells.append(cell)
        rows.append(MetricRow(name, cells))
    return rows


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def run_evaluations(jobs: Sequence[Job]) -> dict[int, list[Job]]:
    """Each run's evaluations that finished with metrics: the run itself if it is one, else the
    evaluate jobs of what it trained, the newest per dataset version. A finetune used as a judge
    scores other models' answers, not itself: those jobs are left out."""
    evaluations: dict[int, list[Job]] = {job.pk: [] for job in jobs}
    children = (
        Job.objects.filter(
            source_job__in=[job.pk for job in jobs], kind=JobKind.EVALUATE, status=JobStatus.SUCCEEDED
        )
        .exclude(config__has_key="judge")
        .select_related("dataset_version__dataset")
        .order_by("-created_at", "-pk")
    )
    seen: set[tuple[int, int]] = set()
    for child in children:
        assert child.source_job_id is not None  # the query keeps evaluations of these runs only
        key = (child.source_job_id, child.dataset_version_id)
        if key not in seen:
            seen.add(key)
            evaluations[child.source_job_id].append(child)
    for job in jobs:
        if job.is_evaluation and job.status == JobStatus.SUCCEEDED:
            evaluations[job.pk].append(job)
    return evaluations


def evaluation_values(evaluations: dict[int, list[Job]], jobs: Sequence[Job]) -> list[dict[str, float]]:
    """Per run, ``"<metric> on <dataset:vN>"`` -> value."""
    return [
        {
            f"{name} on {e.dataset_version.dataset.name}:v{e.dataset_version.version}": value
            for e in evaluations[job.pk]
            for name, value in _numeric(e.metrics).items()
        }
        for job in jobs
    ]


# --- evaluation outputs side by side --------------------------------------------------------------


@dataclass
class OutputsTable:
    """The per-row predictions of evaluations of the same dataset version, one column per run."""

    dataset: str
    runs: list[Job]  # the compared runs that have outputs on it, in page order
    evaluations: list[Job]
    rows: list[dict[str, Any]] = field(default_factory=list)
    total_rows: int = 0


def _clip(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= OUTPUT_TEXT_CHARS else text[:OUTPUT_TEXT_CHARS] + "…"


def outputs_tables(jobs: Sequence[Job], evaluations: dict[int, list[Job]]) -> tuple[list[OutputsTable], str]:
    """Side-by-side outputs where two or more runs were evaluated on the same rows; and, when
    some could not be read, why (shown on the page)."""
    by_version: dict[int, list[tuple[Job, Job]]] = {}
    for job in jobs:
        for e in evaluations[job.pk]:
            by_version.setdefault(e.dataset_version_id, []).append((job, e))
    tables: list[OutputsTable] = []
    notes: list[str] = []
    for pairs in by_version.values():
        if len(pairs) < 2:
            continue
        version = pairs[0][1].dataset_version
        label = f"{version.dataset.name}:v{version.version}"
        missing = [e for _, e in pairs if not e.artifacts.get("predictions")]
        if missing:
            notes.append(
                f"{label}: evaluation job{'s' if len(missing) > 1 else ''} "
                f"{', '.join(str(e.pk) for e in missing)} kept no per-row outputs "
                "(evaluated before they were recorded, or with perplexity only)."
            )
            pairs = [(job, e) for job, e in pairs if e.artifacts.get("predictions")]
            if len(pairs) < 2:
                continue
        try:
            read = [tracking.table_read(e.artifacts["predictions"]) for _, e in pairs]
        except (ServiceUnavailable, ValueError) as exc:
            notes.append(f"{label}: the per-row outputs could not be read ({exc}).")
            continue
        table = OutputsTable(label, [job for job, _ in pairs], [e for _, e in pairs])
        by_row = [{row.get("row"): row for row in rows} for rows in read]
        row_ids = sorted(set.intersection(*(set(rows) for rows in by_row)), key=lambda r: (r is None, r))
        table.total_rows = len(row_ids)
        for row_id in row_ids[:OUTPUT_ROWS]:
            first = by_row[0][row_id]
            table.rows.append(
                {
                    "row": row_id,
                    "input": _clip(first.get("input")),
                    "reference": _clip(first.get("reference")),
                    "outputs": [
                        {
                            "prediction": _clip(rows[row_id].get("prediction")),
                            "score": rows[row_id].get("score"),
                        }
                        for rows in by_row
                    ],
                }
            )
        tables.append(table)
    return tables, " ".join(notes)


# --- the page ------------------------------------------------------------------------------------


def chart_data(jobs: Sequence[Job], query: CompareQuery) -> dict[str, Any]:
    """What compare.js draws: each run's downsampled series by metric, and how to turn steps into time."""
    series = metric_series(jobs=jobs)
    # The losses first, as people look for them; the rest by name.
    names = sorted(
        {name for by_name in series.values() for name in by_name},
        key=lambda name: ("loss" not in name, name != "loss", name),
    )
    runs = []
    for index, job in enumerate(jobs):
        last_step = max((s.steps[-1] for s in series[job.pk].values() if s.steps), default=0)
        runs.append(
            {
                "id": job.pk,
                "label": f"{job.pk} · {job.name}"[:60],
                "colour": COLOURS[index],
                # Points carry no time of their own: time is the run time spread evenly over the steps.
                "seconds_per_step": job.run_seconds / last_step if last_step and job.run_seconds else None,
            }
        )
    return {
        "runs": runs,
        "metrics": {
            name: {str(job.pk): series[job.pk][name].as_json() for job in jobs if name in series[job.pk]}
            for name in names
            if name != TOKENS_METRIC
        },
        "tokens": {
            str(job.pk): series[job.pk][TOKENS_METRIC].as_json()
            for job in jobs
            if TOKENS_METRIC in series[job.pk]
        },
        "state": {"smooth": query.smooth, "log": query.log, "x": query.x, "baseline": query.baseline},
    }


@login_required
def compare(request: AuthenticatedHttpRequest) -> HttpResponse:
    try:
        query = compare_query_parse(request.GET)
        jobs = compare_jobs(user=request.user, job_ids=query.job_ids)
    except (ValidationFailed, NotFound) as exc:
        status = 404 if isinstance(exc, NotFound) else 400
        return render(request, "compare.html", {"error": exc.message}, status=status)
    baseline_index = query.job_ids.index(query.baseline)
    evaluations = run_evaluations(jobs)
    finals = [_numeric(job.metrics) if not job.is_evaluation else {} for job in jobs]
    final_names = sorted({name for values in finals for name in values})
    eval_values = evaluation_values(evaluations, jobs)
    eval_names = sorted({name for values in eval_values for name in values})
    outputs, outputs_note = outputs_tables(jobs, evaluations)
    projects = {job.project_id: job.project for job in jobs}
    params = param_rows(jobs)
    data = chart_data(jobs, query)
    has_tokens = len(data["tokens"]) == len(jobs)
    if query.x == "tokens" and not has_tokens:
        message = "These runs did not all log the tokens they saw: the x axis can be step or time."
        return render(request, "compare.html", {"error": message}, status=400)
    context = {
        "jobs": jobs,
        "runs": list(zip(jobs, COLOURS, strict=False)),
        # The nav shows a project's sections when all the runs are of one project.
        "project": next(iter(projects.values())) if len(projects) == 1 else None,
        "query": query,
        "baseline_index": baseline_index,
        "params": params,
        "params_differ": sum(row.differs for row in params),
        "final_rows": metric_rows(final_names, finals, baseline_index),
        "eval_rows": metric_rows(eval_names, eval_values, baseline_index),
        "evaluations": [evaluations[job.pk] for job in jobs],
        "outputs": outputs,
        "outputs_note": outputs_note,
        "chart_data": data,
        "has_tokens": has_tokens,
        "smooth_percent": round(query.smooth * 100),
    }
    return render(request, "compare.html", context)
