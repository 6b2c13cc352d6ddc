"""What the MLflow gate costs: one training attempt's run logged straight to MLflow and through the gate.

Both sides do the same work with MLflow's own client, as a worker's trainer
does: create the run, log 20 params, send the metrics in batches of 100 points
(workers.tracking buffers them so), upload a 1 MB artifact, end the run. The
direct side talks to the MLflow server; the gated side to the web app
(gunicorn, DEBUG off, as in production) at /mlflow with an attempt's token,
which checks every call and forwards it to the same server. The two sides
alternate, on one machine, one database and one MLflow server.

Run from the repository root: .venv/bin/python -m bench.mlflow_gate [--runs 10] [--batches 20]
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.seed import project_seed  # noqa: E402
from infra import processes  # noqa: E402


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip


def _log_one_run(client, experiment_id: str, batches: int, artifact: Path) -> float:  # type: ignore[no-untyped-def]
    from mlflow.entities import Metric, Param

    started = time.perf_counter()
    run_id = client.create_run(experiment_id, run_name="bench").info.run_id
    client.log_batch(run_id, params=[Param(f"p{i}", str(i)) for i in range(20)])
    for batch in range(batches):
        now = int(time.time() * 1000)
        points = [
            Metric("loss", 1.0 / (1 + step), now, step) for step in range(batch * 100, batch * 100 + 100)
        ]
        client.log_batch(run_id, metrics=points)
    client.log_artifact(run_id, str(artifact), "out")
    client.set_terminated(run_id, "FINISHED")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="tuneyard-bench-gate-"))
    mlflow_port, web_port = processes.free_port(), processes.free_port()
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    os.environ.update(
        DATABASE_URL=f"sqlite:///{tmp / 'bench.sqlite3'}",
        TUNEYARD_VAR_DIR=str(tmp),
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(40),
        WORKER_TOKEN=secrets.token_urlsafe(24),
        MLFLOW_TRACKING_URI=mlflow_url,
        DJANGO_SETTINGS_MODULE="controlplane.settings",
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    env = dict(os.environ)
    (tmp / "art").mkdir()
    children = [
        _start(
            processes.mlflow_command(
                port=mlflow_port,
                backend_store_uri=f"sqlite:///{tmp / 'mlflow.db'}",
                artifacts_destination=str(tmp / "art"),
            ),
            env | processes.MLFLOW_ENV,
            tmp / "mlflow.log",
        )
    ]
    try:
        processes.wait_for_http(f"{mlflow_url}/health", timeout=120, process=children[0])
        seeded = project_seed(tmp, slug="bench", rows=8)
        from controlplane.training.credentials import tracking_token_issue
        from controlplane.training.models import Job, JobStatus

        job = Job.objects.create(
            project=seeded["project"], name="bench", created_by=seeded["user"], base_model=seeded["base"],
            dataset_version=seeded["version"], config={}, queue="cpu", status=JobStatus.RUNNING,
            mlflow_experiment="tuneyard/bench",
        )  # fmt: skip
        token = tracking_token_issue(job_id=job.pk, attempt=job.attempt)
        children.append(_start(processes.web_command(port=web_port), env, tmp / "web.log"))
        processes.wait_for_http(f"http://127.0.0.1:{web_port}/login/", timeout=60, process=children[1])

        from mlflow import MlflowClient

        direct = MlflowClient(mlflow_url)
        gated = MlflowClient(f"http://127.0.0.1:{web_port}/mlflow")
        experiment_id = direct.create_experiment("tuneyard/bench")
        artifact = tmp / "artifact.bin"
        artifact.write_bytes(os.urandom(1024 * 1024))

        os.environ["MLFLOW_TRACKING_TOKEN"] = token  # the direct server ignores it
        _log_one_run(direct, experiment_id, args.batches, artifact)  # warm both paths up
        _log_one_run(gated, experiment_id, args.batches, artifact)
        times: dict[str, list[float]] = {"direct": [], "gate": []}
        for _ in range(args.runs):
            times["direct"].append(_log_one_run(direct, experiment_id, args.batches, artifact))
            times["gate"].append(_log_one_run(gated, experiment_id, args.batches, artifact))
        calls = (
            2 + args.batches + 2
        )  # create, params, batches, artifact upload, end (roughly; the client adds reads)
        direct_ms = statistics.median(times["direct"]) * 1000
        gate_ms = statistics.median(times["gate"]) * 1000
        extra_ms = (gate_ms - direct_ms) / calls
        print(f"one run: {calls}+ MLflow calls, {args.batches * 100} metric points, a 1 MB artifact")
        print(f"  straight to MLflow: median {direct_ms:.0f} ms of {args.runs} runs")
        ratio = gate_ms / direct_ms
        print(f"  through the gate:   median {gate_ms:.0f} ms ({ratio:.2f}x, +{extra_ms:.1f} ms a call)")
    finally:
        for child in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
                try:
                    child.wait(timeout=15)
                except subprocess.TimeoutExpired:  # gunicorn waits on the client's kept-alive connections
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()


if __name__ == "__main__":
    main()
