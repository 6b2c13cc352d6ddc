from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _serve(**env: str) -> subprocess.CompletedProcess[str]:
    unset = ("SECRET_KEY", "WORKER_TOKEN", "DEBUG", "TUNEYARD_LAPTOP")
    base = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [sys.executable, "-c", "import controlplane.wsgi"],
        cwd=ROOT,
        env=base | env,
        capture_output=True,
        text=True,
    )


def test_the_web_app_refuses_to_serve_with_the_development_secrets():
    result = _serve()
    assert result.returncode != 0 and "Set SECRET_KEY and WORKER_TOKEN" in result.stderr
    assert _serve(SECRET_KEY="s3cret", WORKER_TOKEN="dev-worker-token").returncode != 0


def test_it_serves_with_real_secrets_or_on_a_laptop():
    assert _serve(SECRET_KEY="s3cret", WORKER_TOKEN="t0ken").returncode == 0
    assert _serve(TUNEYARD_LAPTOP="true").returncode == 0  # what `make up` sets
    assert _serve(DEBUG="true").returncode == 0
