"""Dispatch overhead, side by side on one machine and one Redis.

1. Latency from the API call that submits a job to the worker's accepted
   claim (the job's started_at), against a raw Celery round trip: delay() of a
   bare task on a solo worker with the same delivery settings, to its result
   read back. The one-way trip (send to task start) is shown too, and the
   floor of the path: two of the lightest authenticated API requests plus that
   one-way trip.
2. A whole trivial job through Tuneyard (API call to finished_at) against the
   same training run started directly (python -m workers.engine), alternating.
   --claims-only skips this: each job is cancelled once claimed.

Run from the repository root: .venv/bin/python -m bench.dispatch_overhead [--jobs 12]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.seed import database_create, project_seed  # noqa: E402
from infra import processes  # noqa: E402

IDLE_SECONDS = 0.02  # between baseline messages: time for the worker to acknowledge the last one


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip


def _wait_ready(log: Path, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while "ready." not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(log.read_text()[-2000:])
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--pings", type=int, default=200)
    parser.add_argument(
        "--claims-only", action="store_true", help="measure the claim only: cancel each job once claimed"
    )
    parser.add_argument(
        "--database-url", default=None, help="a PostgreSQL database to create afresh (default: SQLite)"
    )
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise

    tmp = Path(tempfile.mkdtemp(prefix="tuneyard-bench-"))
    redis_port, web_port = processes.free_port(), processes.free_port()
    broker = f"redis://127.0.0.1:{redis_port}/0"
    env = dict(
        os.environ,
        DATABASE_URL=args.database_url or f"sqlite:///{tmp / 'bench.sqlite3'}",
        TUNEYARD_VAR_DIR=str(tmp),
        # The tiny base model is a folder in tmp: the one root models may load from here.
        MODEL_URI_ROOTS=str(tmp),
        # Served as in production: DEBUG off, so real secrets, made up for this run.
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(40),
        WORKER_TOKEN=secrets.token_urlsafe(24),
        CELERY_BROKER_URL=broker,
        REDIS_URL=broker,
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}",
        CONTROLPLANE_URL=f"http://127.0.0.1:{web_port}",
        DJANGO_SETTINGS_MODULE="controlplane.settings",
        PYTHONUNBUFFERED="1",
    )
    os.environ.update(env)
    children: list[subprocess.Popen] = []
    if args.database_url:
        database_create(args.database_url)
    try:
        (tmp / "redis").mkdir()
        children.append(
            _start(processes.redis_command(port=redis_port, workdir=tmp / "redis"), env, tmp / "redis.log")
        )
        processes.wait_for_port(redis_port)

        seeded = project_seed(tmp, slug="bench", rows=16)
        token, base, version = seeded["token"], seeded["base"], seeded["version"]
        # One artifact folder for every run, wherever the process that logs it runs.
        from mlflow import MlflowClient

        from controlplane.training.models import Job

        MlflowClient(env["MLFLOW_TRACKING_URI"]).create_experiment(
            "tuneyard/bench", artifact_location=str(tmp / "mlartifacts")
        )
        web = _start(processes.web_command(port=web_port), env, tmp / "web.log")
        children.append(web)
        processes.wait_for_http(f"http://127.0.0.1:{web_port}/login/", process=web)
        worker_log = tmp / "worker.log"
        worker = _start(processes.worker_command(queues=["bench"], name="bench@%h"), env, worker_log)
        children.append(worker)
        raw_log = tmp / "raw.log"
        raw = _start(
            [str(processes.BIN / "celery"), "-A", "bench.raw_celery", "worker", "-Q", "raw", "--pool=solo",
             "--without-gossip", "--without-mingle", "--loglevel=INFO", "-n", "raw@%h"], env, raw_log,
        )  # fmt: skip
        children.append(raw)
        _wait_ready(worker_log, worker)
        _wait_ready(raw_log, raw)

        import httpx
        import redis

        from bench.raw_celery import app as raw_app
        from bench.raw_celery import echo
        from controlplane.training.services import job_spec_build

        # -- 1. raw Celery: one way (send to task start) and a round trip (delay() to its result).
        # Each starts on an idle worker, as a Tuneyard job does: the one before has been acknowledged.
        r = redis.Redis.from_url(broker)
        raw_latencies, round_trips = [], []
        for i in range(args.pings + 10):
            time.sleep(IDLE_SECONDS)
            key = f"ping-{i}"
            sent = time.time()
            raw_app.send_task("raw.ping", args=[key], queue="raw", ignore_result=True)
            started = float(r.blpop(key, timeout=30)[1])
            if i >= 10:  # warm-up
                raw_latencies.append(started - sent)
        for i in range(args.pings + 10):
            time.sleep(IDLE_SECONDS)
            begin = time.perf_counter()
            assert echo.delay(i).get(timeout=30) == i
            if i >= 10:
                round_trips.append(time.perf_counter() - begin)

        config = {
            "hyperparameters": {"max_steps": 4, "batch_size": 4, "max_seq_length": 64},
            "resources": {"queue": "bench"},
        }
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{web_port}/api/v1/", headers={"Authorization": f"Token {token}"}
        )
        # -- 2. the lightest authenticated API request (three statements: token, roles, projects)
        request_latencies = []
        for i in range(args.pings + 10):
            begin = time.perf_counter()
            api.get("projects").raise_for_status()
            if i >= 10:
                request_latencies.append(time.perf_counter() - begin)

        # -- 3. Tuneyard jobs, alternating with the same training run started directly
        claim_latencies, api_latencies, publish_latencies, tuneyard_walls, direct_walls = [], [], [], [], []
        for i in range(args.jobs + 1):
            sent = time.time()
            response = api.post(
                "jobs",
                json={
                    "project": "bench",
                    "base_model": base.pk,
                    "dataset_version": version.pk,
                    "config": config,
                },
            )
            answered = time.time()
            job_id = response.json()["id"]
            fields = ("started_at", "finished_at", "status", "published_at")
            while True:
                job = Job.objects.filter(pk=job_id).values(*fields).get()
                if job["started_at"] and args.claims_only:
                    # Only the claim is measured: stop the run and wait for the worker to let it go.
                    api.post(f"jobs/{job_id}/cancel").raise_for_status()
                    while not Job.objects.filter(pk=job_id, finished_at__isnull=False).exists():
                        time.sleep(0.05)
                    break
                if job["finished_at"]:
                    break
                time.sleep(0.002 if job["started_at"] is None else 0.05)
            if i > 0:  # the first is a warm-up: first imports, first MLflow schema
                claim_latencies.append(job["started_at"].timestamp() - sent)
                if job["published_at"]:  # unset when the claim came first: the row was running by then
                    publish_latencies.append(job["published_at"].timestamp() - sent)
                api_latencies.append(answered - sent)
            if args.claims_only:
                continue
            assert job["status"] == "succeeded", Job.objects.get(pk=job_id).error
            direct_dir = tmp / f"direct-{i}"
            direct_dir.mkdir()
            spec = job_spec_build(
                Job.objects.select_related("project", "base_model", "dataset_version").get(pk=job_id)
            )
            (direct_dir / "spec.json").write_text(spec.model_dump_json())
            begin = time.time()
            command = [
                sys.executable,
                "-m",
                "workers.engine",
                str(direct_dir / "spec.json"),
                str(direct_dir / "work"),
            ]
            direct_env = env | {"CUDA_VISIBLE_DEVICES": ""}
            subprocess.run(command, cwd=direct_dir, env=direct_env, check=True, capture_output=True)
            direct = time.time() - begin
            if i > 0:
                tuneyard_walls.append(job["finished_at"].timestamp() - sent)
                direct_walls.append(direct)

        def median_ms(values: list[float]) -> float:
            return statistics.median(values) * 1000

        result = {
            "raw_celery_round_trip_ms_p50": round(median_ms(round_trips), 2),
            "raw_celery_one_way_ms_p50": round(median_ms(raw_latencies), 2),
            "api_call_to_claim_ms_p50": round(median_ms(claim_latencies), 2),
            "api_call_to_publish_ms_p50": (
                round(median_ms(publish_latencies), 2) if publish_latencies else None
            ),
            "api_answer_ms_p50": round(median_ms(api_latencies), 2),
            "claim_vs_round_trip_ratio": round(
                statistics.median(claim_latencies) / statistics.median(round_trips), 2
            ),
            "lightest_api_request_ms_p50": round(median_ms(request_latencies), 2),
            # The path's floor under the contracts: two authenticated requests (the call, the
            # worker's claim) and one broker hop, before any of the path's own work. A little
            # high: the claim is stamped inside its request, before the answer goes back.
            "floor_vs_round_trip_ratio": round(
                (2 * statistics.median(request_latencies) + statistics.median(raw_latencies))
                / statistics.median(round_trips),
                2,
            ),
            "claim_vs_one_way_ratio": round(
                statistics.median(claim_latencies) / statistics.median(raw_latencies), 2
            ),
            **(
                {}
                if args.claims_only
                else {
                    "tuneyard_job_s_p50": round(statistics.median(tuneyard_walls), 3),
                    "direct_run_s_p50": round(statistics.median(direct_walls), 3),
                    "whole_job_ratio": round(
                        statistics.median(tuneyard_walls) / statistics.median(direct_walls), 3
                    ),
                }
            ),
            "database": env["DATABASE_URL"].split(":", 1)[0],
            "jobs": args.jobs,
            "pings": args.pings,
        }
        print(json.dumps(result, indent=2))
    finally:
        for child in reversed(children):
            if child.poll() is None:
                os.killpg(child.pid, 15)
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, 9)


if __name__ == "__main__":
    main()
