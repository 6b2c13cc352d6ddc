"""The baseline: a bare Celery task on the same Redis, recording when it starts."""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

app = Celery("raw-bench", broker=os.environ["CELERY_BROKER_URL"], fixups=[])
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, worker_hijack_root_logger=False)


@app.task(name="raw.ping")
def ping(key: str) -> None:
    redis.Redis.from_url(os.environ["CELERY_BROKER_URL"]).rpush(key, time.time())
