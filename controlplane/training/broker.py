"""What the broker (Redis) holds, read directly: which run of it this is, and which jobs wait in a queue.

The reconciler uses this to tell a message that is waiting its turn from one
that is gone (lost with a restart, or taken by a worker that died before its
claim), so it resends exactly the lost ones. Kombu keeps a queue as one Redis
list per priority band, each entry a JSON envelope around the base64 task body.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterable, Iterator

import redis
from django.conf import settings

from workers.spec import BROKER_PRIORITY_OPTIONS


@functools.cache
def _client(url: str) -> redis.Redis:
    # One connection pool per broker URL for the process: a dispatch asks for the
    # epoch every time, and a new connection each time would cost a TCP handshake.
    return redis.Redis.from_url(url, socket_timeout=5)


def broker_epoch() -> str:
    """Which run of the broker process this is (Redis's run_id, new at every start); "" if unknown.

    Redis here keeps nothing on disk, so a message published under another
    epoch is gone. Read before publishing: if the broker restarts in between,
    the job looks lost and is sent again, a duplicate the claim refuses, never a loss.
    """
    try:
        return str(_client(settings.CELERY_BROKER_URL).info("server")["run_id"])
    except (redis.RedisError, ValueError, KeyError):
        return ""


def queue_keys(queue: str) -> list[str]:
    """The Redis lists of ``queue``, in the order workers take from them (band 0 first)."""
    sep = BROKER_PRIORITY_OPTIONS["sep"]
    return [
        queue if band == 0 else f"{queue}{sep}{band}" for band in BROKER_PRIORITY_OPTIONS["priority_steps"]
    ]


def queue_specs(client: redis.Redis, queue: str) -> Iterator[dict]:
    """The JobSpecs (as dicts) waiting in ``queue``, in the order a worker would take them."""
    for key in queue_keys(queue):
        # kombu pushes on the left and workers pop from the right.
        for raw in reversed(client.lrange(key, 0, -1)):
            try:
                envelope = json.loads(raw)
                args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
                spec = args[0]
            except (ValueError, KeyError, TypeError, IndexError):
                continue  # not one of our messages
            if isinstance(spec, dict):
                yield spec


def queued_attempts(queues: Iterable[str]) -> set[tuple[object, object]] | None:
    """(job id, attempt) of every job message waiting in ``queues``; None if the broker cannot be read.

    As the messages say them: a message that is not a valid spec may hold anything there.
    """
    try:
        client = _client(settings.CELERY_BROKER_URL)
        return {
            (spec.get("job_id"), spec.get("attempt"))
            for queue in set(queues)
            for spec in queue_specs(client, queue)
        }
    except redis.RedisError:
        return None
