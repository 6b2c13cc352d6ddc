"""The GPU workers' Celery app. It never imports Django (nor torch: training runs in a subprocess).

Settings fit long GPU jobs: a message is acknowledged only after the job ends
and is put back if the worker dies, one message at a time per job slot; the
claim on the control plane makes a redelivered message harmless.
"""

from __future__ import annotations

import json
import os

from celery import Celery

from workers.gpus import gpu_inventory
from workers.spec import BROKER_PRIORITY_OPTIONS

broker_url = os.environ.get("CELERY_BROKER_URL") or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

# fixups=[]: Celery would otherwise set Django up whenever DJANGO_SETTINGS_MODULE
# happens to be in the environment (as it is under `make up`).
app = Celery("tuneyard-workers", broker=broker_url, include=["workers.tasks"], fixups=[])
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    # A thread per job a host can run at once: one per GPU (each job takes whole
    # GPUs from the worker's pool), one on a host without GPUs. Threads, not
    # processes: a job thread only supervises its training subprocess.
    worker_pool="threads",
    worker_concurrency=int(os.environ.get("TUNEYARD_WORKER_CONCURRENCY") or max(1, len(gpu_inventory()))),
    task_default_queue="cpu",
    # Redis redelivers an unacknowledged message after this long. A redelivered
    # job still running elsewhere is refused at the claim, so a short timeout
    # costs a wasted message, not a second run; 12 h keeps even those rare.
    broker_transport_options={
        **BROKER_PRIORITY_OPTIONS,
        "visibility_timeout": int(os.environ.get("TUNEYARD_VISIBILITY_TIMEOUT", 12 * 3600)),
        # Any other kombu Redis option, as JSON (e.g. how often unacked messages are swept).
        **json.loads(os.environ.get("TUNEYARD_BROKER_TRANSPORT_OPTIONS") or "{}"),
    },
    broker_connection_retry_on_startup=True,
    worker_redirect_stdouts=False,
    worker_hijack_root_logger=False,
)
