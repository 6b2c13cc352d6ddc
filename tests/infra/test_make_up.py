"""`make up` with the laptop defaults (SQLite, its own Redis and MLflow server, one
worker): it starts, serves the demo, trains the demo job, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from infra import processes

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_make_up_starts_the_laptop_defaults_and_stops_on_ctrl_c(tmp_path):
    web, mlflow, redis = processes.free_port(), processes.free_port(), processes.free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "DATABASE_URL",
            "REDIS_URL",
            "MLFLOW_TRACKING_URI",
            "DJANGO_SETTINGS_MODULE",
            "CELERY_BROKER_URL",
        )
    }
    env |= {
        "TUNEYARD_VAR_DIR": str(tmp_path / "var"),
        "TUNEYARD_PORT": str(web),
        "MLFLOW_PORT": str(mlflow),
        "TUNEYARD_REDIS_PORT": str(redis),
    }
    log = tmp_path / "up.log"
    up = subprocess.Popen(
        ["make", "up"],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while "Tuneyard is up" not in log.read_text(errors="replace"):
            assert up.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.5)
        output = log.read_text()
        assert f"http://127.0.0.1:{web}/" in output and "tuneyard-demo" in output

        base = f"http://127.0.0.1:{web}"
        assert httpx.get(f"{base}/login/").status_code == 200
        assert httpx.get(f"{base}/static/vendor/plotly/plotly.min.js").status_code == 200
        token = httpx.post(
            f"{base}/api/v1/auth/token", data={"username": "alice", "password": "tuneyard-demo"}
        ).json()["token"]
        api = httpx.Client(
            base_url=f"{base}/api/v1/", headers={"Authorization": f"Token {token}"}, timeout=30
        )
        base_model = api.get("base-models", params={"project": "demo"}).json()["results"][0]
        dataset = api.get("datasets", params={"project": "demo"}).json()["results"][0]
        assert base_model["name"] == "tiny-llama" and dataset["row_count"] == 64

        # The seeded demo trains on the embedded stack: SQLite, its Redis, its MLflow, its worker.
        job = api.post(
            "jobs",
            json={
                "project": "demo",
                "base_model": base_model["id"],
                "dataset_version": dataset["id"],
                "config": {"hyperparameters": {"max_steps": 8, "max_seq_length": 64}},
            },
        ).json()
        while (job := api.get(f"jobs/{job['id']}").json())["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline + 180, job
            time.sleep(0.5)
        assert job["status"] == "succeeded", job["error"]
        assert httpx.get(f"http://127.0.0.1:{mlflow}/health").status_code == 200
        # MLflow's UI and API through the gate, signed in only; DEBUG off: no debug page to show.
        assert httpx.get(f"{base}/mlflow/").status_code == 401
        seen = api.get(f"{base}/mlflow/api/2.0/mlflow/experiments/search", params={"max_results": 100})
        assert seen.status_code == 200 and seen.json()["experiments"], seen.text
        assert all(e["name"].startswith("tuneyard/demo") for e in seen.json()["experiments"])
        missing = httpx.get(f"{base}/no-such-page")
        assert missing.status_code == 404 and "DEBUG" not in missing.text
    finally:
        os.killpg(up.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's process group
        up.wait(timeout=60)  # make itself exits at once, reporting the interrupt
        deadline = time.monotonic() + 60
        while "Stopped." not in log.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.5)
    output = log.read_text()
    assert "Stopping Tuneyard" in output and "Stopped." in output, output[-3000:]
    assert "exited with code" not in output, output[-3000:]
    for port in (web, mlflow, redis):
        assert not processes.port_open(port), f"port {port} still open after stop"
