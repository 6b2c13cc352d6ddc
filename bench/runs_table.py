"""The runs table and ``GET /api/v1/jobs`` at 100 and at 10,000 finished jobs, side by side.

Each size gets a scratch PostgreSQL database of its own (created, migrated,
filled with ``bulk_create``: finished jobs with final metrics, their indexed
summaries, tags on some). Then the first page of the API and of the runs page,
sorted by a final metric and filtered, is asked for ``--repeats`` times in all
after a warm-up, the two sizes taking turns over ``--rounds`` fresh processes;
the median server time (Django's whole stack, in process, no network) and the
SQL query count of each are reported, with the 10k / 100 ratio. Target: a ratio of 1.5 or less,
and the same number of queries at both sizes.

For contrast (docs/ENVIRONMENT.md): MLflow's run search sorted by a metric took
10.8 s at 10,000 runs against 137 ms at 100 on this machine.

Run from the repository root: .venv/bin/python -m bench.runs_table [--repeats 30] [--rounds 3]
  [--server postgres://postgres@127.0.0.1:5432] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.seed import page_times  # noqa: E402

SIZES = (100, 10_000)
QUERY = "ordering=-metric.eval_loss&status=succeeded&kind=finetune&metric=eval_loss:0:5"


def _database_create(server: str, name: str) -> None:
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def _database_drop(server: str, name: str) -> None:
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _fill(size: int) -> None:
    """``size`` finished jobs in project "bench" (a member, a base model, a dataset version)."""
    from django.utils import timezone

    from controlplane.accounts.models import Role
    from controlplane.accounts.services import member_add, project_create
    from controlplane.datasets.models import Dataset, DatasetVersion
    from controlplane.training.models import (
        BaseModel,
        Job,
        JobMetricValue,
        JobParam,
        JobStatus,
        JobTag,
        numeric_params,
    )
    from workers.spec import TrainingConfig

    project = project_create(slug="bench", name="Bench")
    user = member_add(project=project, username="bench", role=Role.MEMBER, password="bench-password-1")
    base = BaseModel.objects.create(project=project, name="tiny", uri="runs:/0/model")
    dataset = Dataset.objects.create(project=project, name="data")
    version = DatasetVersion.objects.create(
        dataset=dataset,
        version=1,
        format="instruction",
        sha256="0" * 64,
        uri="runs:/0/d.jsonl",
        filename="d.jsonl",
        row_count=100,
        size_bytes=100,
        created_by=user,
    )
    rng = random.Random(size)
    now = timezone.now()
    statuses = [JobStatus.SUCCEEDED] * 8 + [JobStatus.FAILED, JobStatus.CANCELLED]
    jobs = []
    for n in range(size):
        config = TrainingConfig.model_validate(
            {"hyperparameters": {"learning_rate": rng.choice([1e-5, 5e-5, 1e-4, 2e-4, 5e-4])}}
        ).model_dump(mode="json")
        status = rng.choice(statuses)
        metrics = (
            {"eval_loss": rng.uniform(0.3, 3), "train_loss": rng.uniform(0.2, 3)}
            if status == "succeeded"
            else {}
        )
        jobs.append(
            Job(
                project=project,
                name=f"run-{n}",
                created_by=user,
                base_model=base,
                dataset_version=version,
                config=config,
                queue="cpu",
                mlflow_experiment="tuneyard/bench",
                status=status,
                metrics=metrics,
                run_seconds=rng.uniform(10, 3600),
                progress=1.0,
                finished_at=now - timedelta(minutes=size - n),
            )
        )
    jobs = Job.objects.bulk_create(jobs, batch_size=2000)
    # created_at is auto_now_add: spread it as a real history would be.
    for job in jobs:
        job.created_at = now - timedelta(minutes=size - job.pk % size)
    Job.objects.bulk_update(jobs, ["created_at"], batch_size=2000)
    JobMetricValue.objects.bulk_create(
        [JobMetricValue(job=j, project=project, name=k, value=v) for j in jobs for k, v in j.metrics.items()],
        batch_size=5000,
    )
    JobParam.objects.bulk_create(
        [
            JobParam(job=j, project=project, name=k, value=v)
            for j in jobs
            for k, v in numeric_params(j.config).items()
        ],
        batch_size=5000,
    )
    JobTag.objects.bulk_create(
        [JobTag(job=j, project=project, name="nightly") for j in jobs[::7]], batch_size=5000
    )


def _measure(client, url: str, repeats: int) -> dict:
    times, queries, response = page_times(client, url, repeats)
    return {"times": times, "queries": queries, "bytes": len(response.content)}


def child(size: int, repeats: int, fill: bool) -> dict:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    if fill:
        call_command("migrate", verbosity=0)
        begin = time.perf_counter()
        _fill(size)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        return {"fill_seconds": round(time.perf_counter() - begin, 1)}
    client = Client()
    client.force_login(get_user_model().objects.get(username="bench"))
    api = _measure(client, f"/api/v1/jobs?project=bench&{QUERY}", repeats)
    rows = len(client.get(f"/api/v1/jobs?project=bench&{QUERY}").json()["results"])
    page = _measure(client, f"/p/bench/runs?{QUERY}", repeats)
    return {"rows": rows, "api": api, "page": page}


def _child_run(server: str, size: int, *extra: str) -> dict:
    name = f"tuneyard_bench_runs_{size}"
    env = os.environ | {
        "DATABASE_URL": f"{server}/{name}",
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "controlplane.settings"),
        "DEBUG": "false",
    }
    out = subprocess.run(
        [sys.executable, "-m", "bench.runs_table", "--child", str(size), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        sys.exit(f"the {size}-job run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30, help="requests per page and size, in all")
    parser.add_argument("--rounds", type=int, default=3, help="the sizes take turns this many times")
    parser.add_argument("--server", default=os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432"))
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--fill", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.repeats, args.fill)))
        return
    names = [f"tuneyard_bench_runs_{size}" for size in SIZES]
    try:
        for size, name in zip(SIZES, names, strict=True):
            _database_create(args.server, name)
            print(
                f"{size} jobs: filled in {_child_run(args.server, size, '--fill')['fill_seconds']} s",
                flush=True,
            )
        # The sizes take turns, each round in a fresh process, so that the machine's load at any
        # moment weighs on both alike.
        per_round = max(1, args.repeats // args.rounds)
        results: dict[int, dict] = {}
        for _ in range(args.rounds):
            for size in SIZES:
                run = _child_run(args.server, size, "--repeats", str(per_round))
                into = results.setdefault(
                    size, {"rows": run["rows"], "api": {"times": []}, "page": {"times": []}}
                )
                for key in ("api", "page"):
                    into[key]["times"] += run[key]["times"]
                    into[key]["queries"], into[key]["bytes"] = run[key]["queries"], run[key]["bytes"]
    finally:
        if not args.keep:
            for name in names:
                _database_drop(args.server, name)
    for run in results.values():
        for key in ("api", "page"):
            times = sorted(run[key].pop("times"))
            run[key]["median_ms"] = round(statistics.median(times) * 1000, 2)
            run[key]["p90_ms"] = round(times[int(len(times) * 0.9) - 1] * 1000, 2)
    small, large = results[SIZES[0]], results[SIZES[1]]
    print(f"query: {QUERY}")
    print(f"(first page, {large['rows']} rows; median of {per_round * args.rounds}, in process)")
    print(f"{'':22}{'100 jobs':>12}{'10,000 jobs':>14}{'10k / 100':>11}{'queries':>12}")
    for key, label in (("api", "GET /api/v1/jobs"), ("page", "runs page")):
        a, b = small[key], large[key]
        ratio = b["median_ms"] / a["median_ms"]
        print(
            f"{label:22}{a['median_ms']:>9.1f} ms{b['median_ms']:>11.1f} ms{ratio:>10.2f}x"
            f"{a['queries']:>6} / {b['queries']:<4}"
        )
    ok = all(
        large[k]["median_ms"] <= 1.5 * small[k]["median_ms"] and large[k]["queries"] == small[k]["queries"]
        for k in ("api", "page")
    )
    print("target (<= 1.5x, equal queries):", "met" if ok else "NOT met")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
