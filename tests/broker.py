"""Reading and clearing a queue in the tests' Redis, across its priority bands."""

from __future__ import annotations

import redis

from controlplane.training.broker import queue_keys, queue_specs
from workers.spec import JobSpec


def queue_clear(redis_url: str, queue: str) -> None:
    redis.Redis.from_url(redis_url).delete(*queue_keys(queue))


def queued_specs(redis_url: str, queue: str) -> list[JobSpec]:
    """The JobSpecs waiting on ``queue``, in the order a worker would take them."""
    return [JobSpec.model_validate(spec) for spec in queue_specs(redis.Redis.from_url(redis_url), queue)]


# No worker reads this queue, so what the dispatch tests send to it stays to be read.
DISPATCH_QUEUE = "dispatch-test"


def dispatched_specs(redis_url: str) -> list[JobSpec]:
    """The specs waiting on the dispatch tests' queue, in the order a worker would take them."""
    return queued_specs(redis_url, DISPATCH_QUEUE)
