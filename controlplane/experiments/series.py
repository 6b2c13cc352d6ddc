"""Metric series of many jobs at once, downsampled on the server so a chart stays light.

A run of 100,000 steps logs 100,000 points per metric; a chart 600 pixels wide
shows no more than a few hundred of them, and sending all of them for ten runs
would make the compare page slow to serve and slower to draw. Each series is
cut to at most ``MAX_POINTS`` by keeping, in each of ``MAX_POINTS / 2`` equal
buckets of its points, the lowest and the highest one (in step order), plus its
first and last point: spikes, the minimum and the maximum survive, which LTTB
alone does not promise.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby

import numpy as np
from django.db import connection
from django.db.models import Count, Max, Min

from controlplane.training.models import Job, JobMetricPoint

MAX_POINTS = 500


@dataclass
class Series:
    """One metric of one job, one curve across its attempts, downsampled: steps ascending."""

    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    # How many points it had before downsampling.
    total: int = 0

    def as_json(self) -> dict[str, object]:
        # Six significant digits are more than a chart can show, and make the page half as long.
        values = [float(f"{value:.6g}") for value in self.values]
        return {"steps": self.steps, "values": values, "total": self.total}


def downsample_indices(values: Sequence[float] | np.ndarray, *, limit: int = MAX_POINTS) -> np.ndarray:
    """Indices of the points to keep (ascending): first, last, and each bucket's min and max.

    At most ``limit`` indices (``limit`` >= 4); all of them when there are no more.
    """
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n <= limit:
        return np.arange(n)
    if limit < 4:
        raise ValueError("keeping the shape needs room for at least 4 points")
    buckets = (limit - 2) // 2
    inner = values[1:-1]  # the first and last are kept apart
    bucket = np.arange(len(inner)) * buckets // len(inner)
    # By bucket, then value (stable: the first of equal values first): each bucket's first entry
    # is its minimum, its last its maximum.
    order = np.lexsort((inner, bucket))
    starts = np.flatnonzero(np.diff(bucket[order], prepend=-1))
    ends = np.append(starts[1:] - 1, len(order) - 1)
    keep = np.concatenate(([0], order[starts] + 1, order[ends] + 1, [n - 1]))
    return np.unique(keep)


def downsample(
    steps: Sequence[int] | np.ndarray, values: Sequence[float] | np.ndarray, *, limit: int = MAX_POINTS
) -> Series:
    steps, values = np.asarray(steps), np.asarray(values, dtype=float)
    keep = downsample_indices(values, limit=limit)
    return Series(steps=steps[keep].tolist(), values=values[keep].tolist(), total=len(values))


def _attempt_series(job_ids: Sequence[int]) -> Iterator[tuple[int, str, int, list[int], list[float]]]:
    """(job, metric, attempt, steps, values) of each attempt's series, steps ascending: every point."""
    rows = (
        JobMetricPoint.objects.filter(job_id__in=job_ids)
        .order_by("job_id", "attempt", "name", "step")
        .values_list("job_id", "attempt", "name", "step", "value")
    )
    for (job_id, attempt, name), group in groupby(rows.iterator(), key=lambda r: r[:3]):
        pairs = [(step, value) for *_, step, value in group]
        yield job_id, name, attempt, [p[0] for p in pairs], [p[1] for p in pairs]


def _cutoffs(first_step: dict[int, int]) -> dict[int, int | None]:
    """Per attempt, the step from which a later attempt replaced its points (None: none did)."""
    return {
        attempt: min((first for a, first in first_step.items() if a > attempt), default=None)
        for attempt in first_step
    }


def metric_series(*, jobs: Sequence[Job], limit: int = MAX_POINTS) -> dict[int, dict[str, Series]]:
    """Every logged metric of each job, by job id then metric name, each at most ``limit`` points.

    The caller has checked who may read them. As on the job page
    (``training.selectors.job_metric_series``), a job's attempts make one
    curve: an attempt that resumed from a checkpoint replaces what earlier
    attempts reported from its first step on.
    """
    if connection.vendor == "postgresql":
        return _metric_series_in_database([job.pk for job in jobs], limit)
    by_job: dict[int, dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]] = {}
    for job_id, name, attempt, step_list, value_list in _attempt_series([job.pk for job in jobs]):
        by_job.setdefault(job_id, {}).setdefault(name, {})[attempt] = (
            np.asarray(step_list, dtype=np.int64),
            np.asarray(value_list, dtype=float),
        )
    result: dict[int, dict[str, Series]] = {job.pk: {} for job in jobs}
    for job_id, by_name in by_job.items():
        first_step: dict[int, int] = {}
        for attempts in by_name.values():
            for attempt, (attempt_steps, _) in attempts.items():
                first = int(attempt_steps[0])
                first_step[attempt] = min(first_step.get(attempt, first), first)
        cutoffs = _cutoffs(first_step)
        for name in sorted(by_name):
            parts_steps, parts_values = [], []
            for attempt, (steps, values) in sorted(by_name[name].items()):
                cutoff = cutoffs[attempt]
                if cutoff is not None:
                    kept = steps < cutoff
                    steps, values = steps[kept], values[kept]
                parts_steps.append(steps)
                parts_values.append(values)
            result[job_id][name] = downsample(
                np.concatenate(parts_steps), np.concatenate(parts_values), limit=limit
            )
    return result


# Each bucket's lowest and highest point, and each curve's first and last: the database reads
# every point but sends back two per bucket. MIN over ARRAY[value, step] is the lowest value
# at its first step; MAX over ARRAY[value, -step] the highest at its first step.
_BUCKETS_SQL = """
SELECT job_id, name, low[1], low[2], high[1], -high[2], first, last FROM (
  SELECT p.job_id, p.name,
         MIN(ARRAY[p.value, p.step::float8]) AS low, MAX(ARRAY[p.value, -p.step::float8]) AS high,
         MIN(p.value) FILTER (WHERE p.step = b.lo) AS first, MIN(p.value) FILTER (WHERE p.step = b.hi) AS last
  FROM {table} p
  JOIN (VALUES {values}) AS b(job_id, name, attempt, lo, hi, width, cutoff)
    ON p.job_id = b.job_id AND p.name = b.name AND p.attempt = b.attempt
  WHERE p.job_id = ANY(%s) AND p.step < b.cutoff
  GROUP BY p.job_id, p.name, p.attempt, (p.step - b.lo) / b.width
) AS buckets
"""
_NO_CUTOFF = 2**62


def _metric_series_in_database(job_ids: list[int], limit: int) -> dict[int, dict[str, Series]]:
    """``metric_series`` on PostgreSQL: two queries, whatever the number of points.

    Sending 200,000 points to Python costs more than everything else the
    compare page does, so the buckets are made by the database: by step range
    (``width`` steps each, at most ``(limit - 2) // 2`` of them per curve, one
    step each when the curve has ``limit`` points or fewer, so it comes whole).
    """
    attempts = list(
        JobMetricPoint.objects.filter(job_id__in=job_ids)
        .values("job_id", "name", "attempt")
        .annotate(lo=Min("step"), hi=Max("step"), n=Count("id"))
        .order_by()
        .values_list("job_id", "name", "attempt", "lo", "hi", "n")
    )
    result: dict[int, dict[str, Series]] = {job_id: {} for job_id in job_ids}
    if not attempts:
        return result
    first_step: dict[int, dict[int, int]] = {}
    for job_id, _, attempt, lo, _, _ in attempts:
        firsts = first_step.setdefault(job_id, {})
        firsts[attempt] = min(firsts.get(attempt, lo), lo)
    cutoffs = {job_id: _cutoffs(firsts) for job_id, firsts in first_step.items()}
    # Per curve (job, name): its first and last live step and how many points it has.
    curves: dict[tuple[int, str], list[int]] = {}
    for job_id, name, attempt, lo, hi, n in attempts:
        cutoff = cutoffs[job_id][attempt]
        if cutoff is not None:
            if lo >= cutoff:
                continue
            hi = min(hi, cutoff - 1)
        curve = curves.setdefault((job_id, name), [lo, hi, 0])
        curve[0], curve[1], curve[2] = min(curve[0], lo), max(curve[1], hi), curve[2] + n
    buckets = (limit - 2) // 2
    rows = []
    for job_id, name, attempt, *_ in attempts:
        if (job_id, name) not in curves:
            continue
        lo, hi, n = curves[(job_id, name)]
        width = 1 if n <= limit else -(-(hi - lo + 1) // buckets)
        cutoff = cutoffs[job_id][attempt]
        rows.append((job_id, name, attempt, lo, hi, width, _NO_CUTOFF if cutoff is None else cutoff))
    values = ",".join(
        ["(%s::bigint, %s::text, %s::bigint, %s::bigint, %s::bigint, %s::bigint, %s::bigint)"] * len(rows)
    )
    sql = _BUCKETS_SQL.format(table=JobMetricPoint._meta.db_table, values=values)
    points: dict[tuple[int, str], dict[int, float]] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, [*(x for row in rows for x in row), list(job_ids)])
        for job_id, name, low, low_step, high, high_step, first, last in cursor.fetchall():
            curve_points = points.setdefault((job_id, name), {})
            curve_points[int(low_step)] = low
            curve_points[int(high_step)] = high
            lo, hi, _ = curves[(job_id, name)]
            if first is not None:
                curve_points[lo] = first
            if last is not None:
                curve_points[hi] = last
    for (job_id, name), curve_points in sorted(points.items()):
        steps = sorted(curve_points)
        if len(steps) > limit:
            # A bucket two attempts share gave up to four points: cut again, in Python, the few left.
            result[job_id][name] = downsample(steps, [curve_points[s] for s in steps], limit=limit)
        else:
            result[job_id][name] = Series(steps=steps, values=[curve_points[s] for s in steps])
        result[job_id][name].total = curves[(job_id, name)][2]
    return result
