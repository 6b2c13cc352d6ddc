"""A worker's heartbeat to the control plane: alive, which queues, which GPUs, which jobs.

It runs in a thread beside the Celery worker's main loop (which is busy
supervising a job), so the Workers page stays current while jobs run.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from importlib.metadata import PackageNotFoundError, version

import httpx

from workers.controlplane_client import ControlPlaneClient
from workers.gpus import gpu_inventory
from workers.spec import WorkerHeartbeat

log = logging.getLogger(__name__)

INTERVAL_SECONDS = float(os.environ.get("TUNEYARD_PRESENCE_SECONDS", "10"))

# Jobs this process is running now; the task adds and removes its job.
running_job_ids: set[int] = set()


def _version() -> str:
    try:
        return version("tuneyard")
    except PackageNotFoundError:
        return ""


def heartbeat_build(name: str, queues: list[str]) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        name=name,
        host=socket.gethostname(),
        queues=queues,
        gpus=gpu_inventory(),
        version=_version(),
        running_job_ids=sorted(running_job_ids),
    )


def presence_start(name: str, queues: list[str], *, interval: float = INTERVAL_SECONDS) -> threading.Event:
    """Start heartbeating in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()

    def beat() -> None:
        client = ControlPlaneClient.from_env(tries=1)
        while not stop.is_set():
            try:
                client.worker_heartbeat(heartbeat_build(name, queues))
            except httpx.HTTPError as exc:
                log.warning("worker heartbeat failed: %s", exc)
            stop.wait(interval)
        client.close()

    threading.Thread(target=beat, name="tuneyard-presence", daemon=True).start()
    return stop
