"""Reads of the runs table: a page of job_search with what each row shows (its sweep, its columns)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controlplane.accounts.models import Project, User
from controlplane.errors import ValidationFailed
from controlplane.sweeps.models import Sweep, Trial
from controlplane.training.models import Job, config_params
from controlplane.training.selectors import (
    SUMMARY_NAME,
    JobFilters,
    JobOrder,
    job_search,
    job_summary_names,
)

MAX_COLUMNS = 20
# Shown when the URL chooses no columns: the metrics people look at first, where the runs have them.
DEFAULT_METRICS = ("eval_loss", "train_loss", "loss")
DEFAULT_PARAMS = ("learning_rate", "method.r")


@dataclass
class RunRow:
    job: Job
    sweep: Sweep | None = None
    trial_number: int | None = None
    cells: list[str] = field(default_factory=list)  # the chosen columns' values, as shown, in order
    run_time: str = ""


@dataclass
class RunsTable:
    rows: list[RunRow]
    next_cursor: str | None
    columns: list[str]  # "metric.<name>" / "param.<name>"
    metric_names: list[str]
    param_names: list[str]
    order: JobOrder


def runs_columns_parse(text: str | None) -> list[str] | None:
    """``?cols=metric.eval_loss,param.learning_rate`` as a list; None when the URL chooses none."""
    if text is None:
        return None
    columns = [part.strip() for part in text.split(",") if part.strip()]
    if len(columns) > MAX_COLUMNS:
        raise ValidationFailed(f"cols: at most {MAX_COLUMNS} columns.")
    for column in columns:
        kind, _, name = column.partition(".")
        if kind not in ("metric", "param") or not SUMMARY_NAME.fullmatch(name):
            raise ValidationFailed(f"cols: {column[:60]!r} is not metric.<name> or param.<name>.")
    return list(dict.fromkeys(columns))


def runs_table(
    *,
    user: User,
    project: Project | None,
    filters: JobFilters,
    order: JobOrder,
    cursor: str,
    limit: int,
    columns: list[str] | None,
) -> RunsTable:
    """One page of the runs table. Queries: job_search's, the column names', one for the sweeps."""
    page = job_search(user=user, project=project, filters=filters, order=order, cursor=cursor, limit=limit)
    names = job_summary_names(user=user, project=project)
    if columns is None:
        columns = [f"metric.{name}" for name in DEFAULT_METRICS if name in names["metrics"]]
        columns += [f"param.{name}" for name in DEFAULT_PARAMS if name in names["params"]]
    ids = [job.pk for job in page.jobs]
    trials = (
        {trial.job_id: trial for trial in Trial.objects.filter(job_id__in=ids).select_related("sweep")}
        if ids
        else {}
    )
    drivers = (
        {sweep.driver_job_id: sweep for sweep in Sweep.objects.filter(driver_job_id__in=ids)} if ids else {}
    )
    rows = []
    for job in page.jobs:
        trial = trials.get(job.pk)
        params = config_params(job.config)
        cells = []
        for column in columns:
            kind, _, name = column.partition(".")
            cells.append(_shown((job.metrics or {}).get(name) if kind == "metric" else params.get(name)))
        rows.append(
            RunRow(
                job=job,
                sweep=trial.sweep if trial else drivers.get(job.pk),
                trial_number=trial.number if trial else None,
                cells=cells,
                run_time=_duration(job.run_seconds),
            )
        )
    return RunsTable(
        rows=rows,
        next_cursor=page.next_cursor,
        columns=columns,
        metric_names=names["metrics"],
        param_names=names["params"],
        order=page.order,
    )


def _shown(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _duration(seconds: float) -> str:
    """Run time as people read it: 45 s, 12 min 5 s, 3 h 20 min."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
