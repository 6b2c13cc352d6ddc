"""The compare page of 10 runs at 5,000 points per metric against 50 points per metric, side by side.

One scratch PostgreSQL database (created, migrated, filled with ``bulk_create``),
in a fresh process: 20 finished finetunes with final metrics, 10 of them with
four metrics (loss, eval_loss, learning_rate, grad_norm) of 5,000 points each
(200,000 points) and 10 with 50 points each. Then ``/compare/?runs=...`` of
each ten is asked for ``--repeats`` times after a warm-up; the median server
time (Django's whole stack, in process, no network), the SQL query count, the
page size and the points sent per curve are printed. Target: under 0.5 s for
the 5,000-point page. The page carries its chart data (``json_script``), so
there is no separate data endpoint to time.

Run from the repository root: .venv/bin/python -m bench.compare_view [--repeats 20]
  [--server postgres://postgres@127.0.0.1:5432] [--keep]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.seed import page_times

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUNS = 10
SIZES = (50, 5_000)
METRICS = ("loss", "eval_loss", "learning_rate", "grad_norm")
TARGET_SECONDS = 0.5


def _database(server: str, name: str, *, create: bool) -> None:
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            conn.execute(f'CREATE DATABASE "{name}"')


def _curve(metric: str, points: int, rng: random.Random) -> list[float]:
    out = []
    for i in range(points):
        t = i / max(points - 1, 1)
        if metric == "learning_rate":
            out.append(2e-4 * min(1.0, t * 10) * (1 - t) + 1e-7)
        elif metric == "grad_norm":
            out.append(abs(rng.gauss(1.0, 0.3)) + (5.0 if rng.random() < 0.002 else 0.0))
        else:
            out.append(
                2.5 * math.exp(-3 * t) + 0.3 + rng.gauss(0, 0.05) + (0.1 if metric == "eval_loss" else 0)
            )
    return out


def _fill() -> tuple[Any, dict[int, list[int]]]:
    """Two sets of ten finished finetunes in project "bench": 50 and 5,000 points per metric."""
    from controlplane.accounts.models import Role
    from controlplane.accounts.services import member_add, project_create
    from controlplane.datasets.models import Dataset, DatasetVersion
    from controlplane.training.models import BaseModel, Job, JobMetricPoint, JobStatus
    from workers.spec import TrainingConfig

    project = project_create(slug="bench", name="Bench")
    user = member_add(project=project, username="bench", role=Role.MEMBER, password="bench-password-1")
    base = BaseModel.objects.create(project=project, name="tiny", uri="runs:/0/model")
    dataset = Dataset.objects.create(project=project, name="data")
    version = DatasetVersion.objects.create(
        dataset=dataset, version=1, format="instruction", sha256="0" * 64, uri="runs:/0/d.jsonl",
        filename="d.jsonl", row_count=100, size_bytes=100, created_by=user,
    )  # fmt: skip
    rng = random.Random(14)
    ids: dict[int, list[int]] = {}
    for points in SIZES:
        jobs = []
        for n in range(RUNS):
            config = TrainingConfig.model_validate(
                {
                    "hyperparameters": {
                        "learning_rate": [1e-5, 5e-5, 1e-4, 2e-4, 5e-4][n % 5],
                        "max_steps": points,
                    }
                }
            ).model_dump(mode="json")
            jobs.append(
                Job(
                    project=project,
                    name=f"run-{points}-{n}",
                    created_by=user,
                    base_model=base,
                    dataset_version=version,
                    config=config,
                    queue="cpu",
                    mlflow_experiment="tuneyard/bench",
                    status=JobStatus.SUCCEEDED,
                    progress=1.0,
                    step=points,
                    total_steps=points,
                    run_seconds=rng.uniform(600, 3600),
                    metrics={"train_loss": rng.uniform(0.2, 1), "eval_loss": rng.uniform(0.3, 1.2)},
                )  # fmt: skip
            )
        jobs = Job.objects.bulk_create(jobs)
        ids[points] = [job.pk for job in jobs]
        for job in jobs:
            JobMetricPoint.objects.bulk_create(
                (
                    JobMetricPoint(job=job, attempt=1, name=name, step=step, value=value)
                    for name in METRICS
                    for step, value in enumerate(_curve(name, points, rng), start=1)
                ),
                batch_size=5000,
            )
    return user, ids


def _measure(client, url: str, repeats: int) -> dict:
    times, queries, response = page_times(client, url, repeats)
    html = response.content.decode()
    start = html.index(">", html.index('id="compare-data"')) + 1
    data = json.loads(html[start : html.index("</script>", start)])
    per_curve = [len(s["steps"]) for by_run in data["metrics"].values() for s in by_run.values()]
    return {
        "median_ms": round(statistics.median(times) * 1000, 1),
        "p90_ms": round(sorted(times)[int(len(times) * 0.9) - 1] * 1000, 1),
        "queries": queries,
        "kb": round(len(response.content) / 1024),
        "max_points_per_curve": max(per_curve),
        "curves": len(per_curve),
    }


def child(repeats: int) -> dict:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    call_command("migrate", verbosity=0)
    start = time.perf_counter()
    user, ids = _fill()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    fill_seconds = time.perf_counter() - start
    client = Client()
    client.force_login(user)
    results: dict[str, Any] = {"fill_seconds": round(fill_seconds, 1)}
    for points, job_ids in ids.items():
        results[str(points)] = _measure(client, f"/compare/?runs={','.join(map(str, job_ids))}", repeats)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--server", default=os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432"))
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.repeats)))
        return
    name = "tuneyard_bench_compare"
    _database(args.server, name, create=True)
    env = os.environ | {
        "DATABASE_URL": f"{args.server}/{name}",
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "controlplane.settings"),
        "DEBUG": "false",
    }
    try:
        out = subprocess.run(
            [sys.executable, "-m", "bench.compare_view", "--child", "--repeats", str(args.repeats)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        if out.returncode:
            sys.exit(f"the benchmark failed:\n{out.stderr[-3000:]}")
    finally:
        if not args.keep:
            _database(args.server, name, create=False)
    results = json.loads(out.stdout.strip().splitlines()[-1])
    small, large = results[str(SIZES[0])], results[str(SIZES[1])]
    print(
        f"/compare/ of {RUNS} runs x {len(METRICS)} metrics "
        f"(median of {args.repeats}, in process, PostgreSQL)"
    )
    print(f"{'':28}{'50 points':>14}{'5,000 points':>16}")
    print(f"{'server time (median)':28}{small['median_ms']:>11.1f} ms{large['median_ms']:>13.1f} ms")
    print(f"{'server time (p90)':28}{small['p90_ms']:>11.1f} ms{large['p90_ms']:>13.1f} ms")
    print(f"{'SQL queries':28}{small['queries']:>14}{large['queries']:>16}")
    print(f"{'page size':28}{small['kb']:>11} KB{large['kb']:>13} KB")
    print(
        f"{'points sent per curve (max)':28}"
        f"{small['max_points_per_curve']:>14}{large['max_points_per_curve']:>16}"
    )
    ok = large["median_ms"] / 1000 < TARGET_SECONDS
    print(f"target (5,000 points under {TARGET_SECONDS} s):", "met" if ok else "NOT met")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
