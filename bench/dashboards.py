"""The manager dashboards at 10,000 jobs with 90 days of worker heartbeats, beside 100 jobs and 1 day.

Each size gets a scratch PostgreSQL database of its own (created, migrated, filled
in bulk), in a fresh process: 3 projects, jobs spread over the days (finetunes,
evaluations of them with metrics, failures with reasons, a few still queued or
running), their ``FinishedJob`` rows built by the same function the job-finished
hook uses, and 4 workers x 8 GPUs of heartbeats every 10 s folded into hourly
``WorkerHour`` rows by the same increment the heartbeat hook adds. Then the
organisation dashboard and one project's dashboard are asked for ``--repeats``
times after a warm-up (the whole 90 days, and the default 30), in process; the
median server time and the SQL query count of each are reported side by side.
Target: under 1 s at 10,000 jobs, and the same number of queries at both sizes.

Run from the repository root: .venv/bin/python -m bench.dashboards [--repeats 20]
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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.seed import page_times  # noqa: E402

# (jobs, days of history)
SIZES = ((100, 1), (10_000, 90))
WORKERS, GPUS_PER_WORKER = 4, 8
HEARTBEAT_SECONDS = 10
# Heartbeats are folded five minutes at a time (30 heartbeats of one utilization each).
FOLD_SECONDS = 300
GPU = "NVIDIA H100 80GB HBM3"
PAGES = (
    ("organisation, 90 days", "/dashboard/?days=90"),
    ("organisation, 30 days", "/dashboard/"),
    ("project, 90 days", "/p/bench-0/dashboard?days=90"),
)


def _database(server: str, name: str, *, drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{name}"')


def _fill(jobs_count: int, days: int) -> Any:
    """The history; returns the reader (a member of every project)."""
    from django.utils import timezone

    from controlplane.accounts.models import Role
    from controlplane.accounts.services import member_add, project_create
    from controlplane.dashboards.models import GpuPrice, WorkerHour
    from controlplane.dashboards.services import (
        finished_job_build,
        hour_of,
        usage_increment,
        worker_hours_bulk_create,
    )
    from controlplane.datasets.models import Dataset, DatasetVersion
    from controlplane.registry.models import Deployment, ModelVersion, Promotion
    from controlplane.training.models import BaseModel, Job, JobStatus, Worker
    from workers.spec import JobKind

    rng = random.Random(jobs_count)
    now = timezone.now()
    span = timedelta(days=days)
    GpuPrice.objects.create(gpu_model=GPU, price_per_hour=2.5)
    gpus = [{"index": i, "name": GPU, "utilization_percent": 0} for i in range(GPUS_PER_WORKER)]
    for w in range(WORKERS):
        Worker.objects.create(name=f"w{w}", host=f"h{w}", queues=["gpu"], gpus=gpus, last_seen=now)
    projects, reader = [], None
    for p in range(3):
        project = project_create(slug=f"bench-{p}", name=f"Bench {p}")
        reader = member_add(
            project=project, username="manager", role=Role.VIEWER, password="bench-password-1"
        )
        people = [
            member_add(project=project, username=f"person-{p}-{i}", role=Role.MEMBER, password="x" * 12)
            for i in range(3)
        ]
        base = BaseModel.objects.create(project=project, name="tiny", uri="runs:/0/model")
        versions = []
        for d in range(3):
            dataset = Dataset.objects.create(project=project, name=f"data-{d}")
            versions.append(
                DatasetVersion.objects.create(
                    dataset=dataset, version=1, format="instruction", sha256=f"{p}{d}".zfill(64),
                    uri="runs:/0/d.jsonl", filename="d.jsonl", row_count=100, size_bytes=100,
                    created_by=people[0],
                )
            )  # fmt: skip
        projects.append((project, people, base, versions))

    reasons = ["CUDA out of memory", "NaN loss at step 120", "dataset row 17 has no output", "lost worker"]
    rows: list[tuple[Job, datetime]] = []
    finetunes: list[Job] = []
    for n in range(jobs_count):
        project, people, base, versions = projects[n % 3]
        created = now - span * (1 - n / jobs_count)
        live = n >= jobs_count - max(jobs_count // 500, 4)
        status = (
            rng.choice([JobStatus.QUEUED, JobStatus.RUNNING])
            if live
            else rng.choices([JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED], [85, 10, 5])[0]
        )
        evaluate = bool(finetunes) and rng.random() < 0.2
        source = rng.choice(finetunes[-50:]) if evaluate else None
        wait = rng.uniform(0, 900)
        run = rng.uniform(60, 4 * 3600)
        started = created + timedelta(seconds=wait) if status != JobStatus.QUEUED else None
        finished = started + timedelta(seconds=run) if started and status.is_finished() else None
        job = Job(
            project=project, name=f"run-{n}", created_by=rng.choice(people),
            kind=JobKind.EVALUATE if evaluate else JobKind.FINETUNE, base_model=base,
            dataset_version=source.dataset_version if source else rng.choice(versions), source_job=source,
            config={}, queue="gpu", gpus=1 if evaluate else rng.choice([1, 2, 4, 8]), status=status,
            worker=f"w{n % WORKERS}" if started else "", gpu_indices=[0] if started else [],
            mlflow_experiment="tuneyard/bench", started_at=started, finished_at=finished,
            run_seconds=run if finished else 0.0,
            error=f"{rng.choice(reasons)}\ntraceback ..." if status == JobStatus.FAILED else "",
            metrics=(
                {"perplexity": rng.uniform(3, 20), "bleu": rng.uniform(5, 40)} if evaluate
                else {"eval_loss": rng.uniform(0.3, 3)}
            ) if status == JobStatus.SUCCEEDED else {},
        )  # fmt: skip
        rows.append((job, created))
        if not evaluate and status == JobStatus.SUCCEEDED:
            finetunes.append(job)
    # The finetunes first: the evaluations name them as their source.
    Job.objects.bulk_create([job for job, _ in rows if not job.source_job], batch_size=2000)
    Job.objects.bulk_create([job for job, _ in rows if job.source_job], batch_size=2000)
    # created_at is auto_now_add: spread it as a real history would be.
    for job, created in rows:
        job.created_at = created
    Job.objects.bulk_update([job for job, _ in rows], ["created_at"], batch_size=2000)

    from controlplane.dashboards.models import FinishedJob

    worker_gpus = dict(Worker.objects.values_list("name", "gpus"))
    FinishedJob.objects.bulk_create(
        [
            finished_job_build(job, worker_gpus=worker_gpus.get(job.worker))
            for job, _ in rows
            if job.is_finished
        ],
        batch_size=2000,
    )

    for i, job in enumerate(finetunes[:: max(len(finetunes) // 30, 1)]):
        version = ModelVersion.objects.create(
            project=job.project, name="model", version=i + 1, job=job, source_uri="runs:/x/adapter",
            mlflow_name=f"{job.project.slug}.model", created_by=job.created_by,
        )  # fmt: skip
        promotion = Promotion.objects.create(
            model_version=version, target="production", status="approved", requested_by=job.created_by
        )
        deployed = {
            "model_version": version,
            "promotion": promotion,
            "approved_by": reader,
            "approved_at": now,
        }
        Deployment.objects.update_or_create(
            project=job.project, model_name="model", target="production", defaults=deployed
        )

    hours = []
    first_hour = hour_of(now - span)
    for w in range(WORKERS):
        at = first_hour
        while at <= now:
            hour = WorkerHour(worker=f"w{w}", hour=at, last_sample_at=at + timedelta(minutes=59))
            for _ in range(3600 // FOLD_SECONDS):
                busy = rng.random() < 0.7
                utilizations = [rng.randint(20, 100) if busy and rng.random() < 0.8 else 0 for _ in gpus]
                step = usage_increment(utilizations, FOLD_SECONDS)
                hour.samples += FOLD_SECONDS // HEARTBEAT_SECONDS
                hour.gpu_seconds += step.gpu_seconds
                hour.busy_gpu_seconds += step.busy_gpu_seconds
                hour.idle_gpu_seconds += step.idle_gpu_seconds
                hour.utilization_seconds += step.utilization_seconds
            hours.append(hour)
            at += timedelta(hours=1)
    worker_hours_bulk_create(rows=hours)
    return reader


def _measure(client, url: str, repeats: int) -> dict:
    times, queries, response = page_times(client, url, repeats)
    return {
        "median_ms": round(statistics.median(times) * 1000, 1),
        "max_ms": round(max(times) * 1000, 1),
        "queries": queries,
        "bytes": len(response.content),
    }


def child(jobs_count: int, days: int, repeats: int) -> dict:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from controlplane.dashboards.models import FinishedJob, WorkerHour
    from controlplane.training.models import Job

    call_command("migrate", verbosity=0)
    start = time.perf_counter()
    reader = _fill(jobs_count, days)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    fill_seconds = time.perf_counter() - start
    client = Client()
    client.force_login(reader)
    return {
        "jobs": Job.objects.count(),
        "finished_rows": FinishedJob.objects.count(),
        "worker_hours": WorkerHour.objects.count(),
        "days": days,
        "fill_seconds": round(fill_seconds, 1),
        "pages": {label: _measure(client, url, repeats) for label, url in PAGES},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--server", default=os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432"))
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.repeats)))
        return
    results = []
    for jobs_count, days in SIZES:
        name = f"tuneyard_bench_dashboards_{jobs_count}"
        _database(args.server, name)
        env = os.environ | {
            "DATABASE_URL": f"{args.server}/{name}",
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "controlplane.settings"),
            "DEBUG": "false",
        }
        command = [sys.executable, "-m", "bench.dashboards", "--child", str(jobs_count), str(days)]
        try:
            out = subprocess.run(
                [*command, "--repeats", str(args.repeats)], cwd=ROOT, env=env, capture_output=True, text=True
            )
            if out.returncode:
                sys.exit(f"the {jobs_count}-job run failed:\n{out.stderr[-3000:]}")
        finally:
            if not args.keep:
                _database(args.server, name, drop_only=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    small, large = results
    print(
        f"history: {small['jobs']} jobs / {small['days']} day / {small['worker_hours']} worker-hours  vs  "
        f"{large['jobs']} jobs / {large['days']} days / {large['worker_hours']} worker-hours "
        f"({WORKERS} workers x {GPUS_PER_WORKER} GPUs); median of {args.repeats}, in process"
    )
    print(f"{'':24}{'small':>10}{'large':>11}{'queries':>12}")
    ok = True
    for label, _ in PAGES:
        a, b = small["pages"][label], large["pages"][label]
        print(
            f"{label:24}{a['median_ms']:>7.1f} ms{b['median_ms']:>8.1f} ms"
            f"{a['queries']:>7} / {b['queries']:<4}"
        )
        ok = ok and b["median_ms"] < 1000 and a["queries"] == b["queries"]
    print("target (< 1 s at the large size, equal queries):", "met" if ok else "NOT met")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
