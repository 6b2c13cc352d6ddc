"""Why a queued job waits, as its page and the API's job detail say it.

A job's ``waiting_reason`` column holds only what the control plane itself holds
it for (a paused project, a quota): dispatch reads it to decide what to send.
A job sent to a queue that no online worker reads is not held, and must stay
sent: its message waits in the broker for the first worker that comes to read
that queue. So that reason is read here, from the workers' last heartbeats,
each time it is shown, and never written to the job.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from controlplane.training.models import Job, JobStatus, Worker


def queues_served() -> list[str]:
    """The queues some online worker reads (online: heard within WORKER_OFFLINE_AFTER_SECONDS)."""
    online_since = timezone.now() - timedelta(seconds=settings.WORKER_OFFLINE_AFTER_SECONDS)
    served: set[str] = set()
    for queues in Worker.objects.filter(last_seen__gte=online_since).values_list("queues", flat=True):
        served.update(str(queue) for queue in queues or [])
    return sorted(served)


def job_waiting_reason(*, job: Job) -> str:
    """Why a queued job is not running yet, where the control plane knows; "" otherwise."""
    if job.status != JobStatus.QUEUED:
        return ""
    if job.waiting_reason:
        return job.waiting_reason
    served = queues_served()
    if job.queue in served:
        return ""
    if not served:
        return f"no online worker reads queue {job.queue}: no worker is online"
    return f"no online worker reads queue {job.queue}; the queues served now: {', '.join(served)}"
