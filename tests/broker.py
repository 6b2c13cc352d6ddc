"""Reading and clearing a queue in the tests' Redis, across its priority bands."""

from __future__ import annotations

import base64
import json

import redis

from workers.spec import BROKER_PRIORITY_OPTIONS, JobSpec


def queue_keys(queue: str) -> list[str]:
    """The Redis lists of ``queue``, in the order workers take from them (band 0 first)."""
    sep = BROKER_PRIORITY_OPTIONS["sep"]
    return [
        queue if band == 0 else f"{queue}{sep}{band}" for band in BROKER_PRIORITY_OPTIONS["priority_steps"]
    ]


def queue_clear(redis_url: str, queue: str) -> None:
    redis.Redis.from_url(redis_url).delete(*queue_keys(queue))


def queued_specs(redis_url: str, queue: str) -> list[JobSpec]:
    """The JobSpecs waiting on ``queue``, in the order a worker would take them."""
    client = redis.Redis.from_url(redis_url)
    specs = []
    for key in queue_keys(queue):
        # kombu pushes on the left and workers pop from the right.
        for raw in reversed(client.lrange(key, 0, -1)):
            envelope = json.loads(raw)
            args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
            specs.append(JobSpec.model_validate(args[0]))
    return specs
