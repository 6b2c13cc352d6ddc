"""The fault-injection run (bench/fault_injection.py) at a size that fits the suite.

It starts its own stack (a fresh PostgreSQL database, MLflow, a Redis server it
may kill, the web process, the reconcilers and two workers), so it needs a
PostgreSQL server: the one DATABASE_URL names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DATABASE_URL = os.environ.get("DATABASE_URL", "")


def _run(tmp_path: Path, *args: str) -> dict:
    if not DATABASE_URL.startswith(("postgres://", "postgresql://")):
        pytest.skip("the fault-injection run needs a PostgreSQL server (set DATABASE_URL)")
    report = tmp_path / "report.json"
    database = DATABASE_URL.rsplit("/", 1)[0] + "/tuneyard_faults_test"
    command = [sys.executable, "bench/fault_injection.py", *args, "--database-url", database]
    done = subprocess.run(
        [*command, "--report", str(report)], cwd=ROOT, capture_output=True, text=True, timeout=1200
    )
    assert report.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(report.read_text())
    assert done.returncode == 0, json.dumps(result, indent=2)
    return result


def test_jobs_and_a_sweep_survive_killed_workers_broker_web_process_and_control_plane(tmp_path):
    report = _run(
        tmp_path, "--jobs", "10", "--worker-kills", "3", "--redis-restarts", "1", "--web-kills", "1",
        "--sweep-trials", "4", "--control-restarts", "1",
    )  # fmt: skip
    assert all(report["checks"].values())
    faults = report["faults"]
    assert (faults["worker_kills"], faults["redis_restarts"], faults["control_restarts"]) == (3, 1, 1)
    assert faults["web_kills"] == 1 and report["submit"]["requests_cut_by_web_kills"] == 1
    assert report["statuses"].get("succeeded") == 14  # ten jobs and four trials
    assert report["sweep"] == {"status": "finished", "trials": 4, "states": ["complete"]}
    # At least one victim had a checkpoint, so resuming was exercised, not just retrying.
    assert faults["worker_kills_with_a_checkpoint_to_resume"] >= 1
    assert report["resumed_attempts"] >= faults["worker_kills_with_a_checkpoint_to_resume"]


def test_a_visibility_timeout_shorter_than_the_jobs_runs_no_job_twice(tmp_path):
    # An odd number of jobs on two workers: at the end one worker idles and
    # sweeps the other's unacknowledged message back into the queue.
    report = _run(
        tmp_path, "--jobs", "3", "--worker-kills", "0", "--redis-restarts", "0", "--web-kills", "0",
        "--visibility-timeout", "2", "--steps", "60",
    )  # fmt: skip
    assert report["checks"]["no_job_ran_twice"] and all(report["checks"].values())
    assert report["duplicate_messages_refused_at_claim"] >= 1  # redelivered, and refused
