"""The baseline: a bare Celery app on the same Redis, with the workers' own delivery settings."""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

broker = os.environ["CELERY_BROKER_URL"]
# Results in another database of the same Redis, so a round trip is delay() to the result read back.
app = Celery("raw-bench", broker=broker, backend=broker.rsplit("/", 1)[0] + "/1", fixups=[])
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, worker_hijack_root_logger=False)


@app.task(name="raw.ping", ignore_result=True)
def ping(key: str) -> None:
    """Record when the task starts: one way, from the send to the worker."""
    redis.Redis.from_url(broker).rpush(key, time.time())


@app.task(name="raw.echo", queue="raw")
def echo(value: int) -> int:
    """A round trip: the caller waits for this result."""
    return value
