from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from infra import processes

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "SECRET_KEY": "s", "WORKER_TOKEN": "t"}


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    if not shutil.which("docker-compose"):
        pytest.fail("docker-compose is missing: apt-get install docker-compose")
    return subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), *args],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
    )


def _bare(command: list[str]) -> list[str]:
    """A command as compose writes it: programs by name, not by the venv's path."""
    return [Path(part).name if part.startswith(str(processes.BIN)) else part for part in command]


def test_the_compose_file_is_valid():
    result = _compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_the_compose_file_refuses_to_run_without_secrets():
    env = {k: v for k, v in ENV.items() if k not in ("SECRET_KEY", "WORKER_TOKEN")}
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode != 0 and "SECRET_KEY" in result.stderr


def test_compose_runs_the_same_commands_the_tests_and_make_up_run():
    config = yaml.safe_load(_compose("config").stdout)
    services = config["services"]

    def command(name: str) -> list[str]:
        value = services[name]["command"]
        return value if isinstance(value, list) else value.split()

    assert command("gpu-worker") == _bare(processes.worker_command(queues=["gpu", "cpu"], name="gpu@%h"))
    assert command("control") == _bare(processes.control_worker_command())[:-1] + ["/tmp/tuneyard-beat"]
    mlflow = command("mlflow")
    backend, artifacts = (
        mlflow[mlflow.index("--backend-store-uri") + 1],
        mlflow[mlflow.index("--artifacts-destination") + 1],
    )
    expected = processes.mlflow_command(
        port=5000, backend_store_uri=backend, artifacts_destination=artifacts, host="0.0.0.0"
    )
    assert mlflow == _bare(expected)
    assert "gunicorn controlplane.wsgi --bind 0.0.0.0:8000" in " ".join(command("web"))
    # The GPU worker reserves GPUs and gets no database credentials.
    worker = services["gpu-worker"]
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "DATABASE_URL" not in worker["environment"]


def test_compose_publishes_only_the_web_app_and_fences_mlflow_off_the_workers():
    services = yaml.safe_load(_compose("config").stdout)["services"]
    assert [name for name, service in services.items() if service.get("ports")] == ["web"]
    # MLflow checks no credentials: nothing shares a network with it but the control plane.
    beside_mlflow = {
        name
        for name, service in services.items()
        if set(service["networks"]) & set(services["mlflow"]["networks"])
    }
    assert beside_mlflow == {"mlflow", "postgres", "web", "control"}
    # The GPU worker reaches MLflow only through the gate, by the web app.
    assert services["gpu-worker"]["environment"]["MLFLOW_TRACKING_URI"] == "http://web:8000/mlflow"
