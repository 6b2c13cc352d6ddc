"""A queued job says why it waits: a queue no online worker reads is named, with the queues that are
served, on its page and in the API's job detail; a served queue keeps the usual line."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from controlplane.accounts.models import Role
from controlplane.accounts.services import member_add
from controlplane.training.models import Worker
from controlplane.training.services import project_dispatch_pause
from tests.broker import queue_clear
from tests.factories import FACTORY_QUEUE, job_make

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def factory_queue(redis_url):
    queue_clear(redis_url, FACTORY_QUEUE)
    yield
    queue_clear(redis_url, FACTORY_QUEUE)


def worker(name: str, queues: list[str], *, seen_ago: timedelta = timedelta(seconds=5)) -> Worker:
    return Worker.objects.create(name=name, host="gpu-1", queues=queues, last_seen=timezone.now() - seen_ago)


def waiting_line(people, job_id: int) -> str:
    client = Client()
    client.force_login(people["alice"])
    html = client.get(f"/jobs/{job_id}/live").content.decode()
    start = html.index('id="job-waiting"')
    return " ".join(html[start : html.index("</p>", start)].split())


def test_a_job_on_a_queue_no_online_worker_reads_says_so_with_the_queues_served(people, api_for, settings):
    settings.WORKER_OFFLINE_AFTER_SECONDS = 60
    worker("w-cpu", ["cpu"])
    worker("w-gpu", ["gpu", "cpu"])
    worker("w-gone", [FACTORY_QUEUE], seen_ago=timedelta(minutes=10))  # offline: serves nothing
    job = job_make(people["demo"], people["alice"])

    line = waiting_line(people, job.pk)
    assert f"no online worker reads queue {FACTORY_QUEUE}; the queues served now: cpu, gpu" in line
    assert "waiting for a free worker" not in line
    detail = api_for("alice").get(f"/api/v1/jobs/{job.pk}").json()
    assert detail["waiting_reason"].startswith(f"no online worker reads queue {FACTORY_QUEUE}")
    assert api_for("charlie").get(f"/api/v1/jobs/{job.pk}").status_code == 404

    # A worker of that queue comes online: the usual line again, and nothing was stored on the job.
    worker("w-factory", [FACTORY_QUEUE])
    assert "waiting for a free worker on this queue" in waiting_line(people, job.pk)
    assert api_for("alice").get(f"/api/v1/jobs/{job.pk}").json()["waiting_reason"] == ""
    job.refresh_from_db()
    assert job.waiting_reason == "" and job.published_at is not None  # still sent, for that worker


def test_with_no_worker_online_the_line_says_so_and_a_hold_keeps_its_own_reason(people, settings):
    # Whatever workers this session runs (they heartbeat every second): none counts as online.
    settings.WORKER_OFFLINE_AFTER_SECONDS = -3600
    job = job_make(people["demo"], people["alice"])
    assert f"no online worker reads queue {FACTORY_QUEUE}: no worker is online" in waiting_line(
        people, job.pk
    )
    admin = member_add(project=people["demo"], username="ada", role=Role.ADMIN, password="x" * 12)
    project_dispatch_pause(project=people["demo"], user=admin, paused=True)
    held = job_make(people["demo"], people["alice"])
    assert "paused: the project&#x27;s dispatch is paused by an admin" in waiting_line(people, held.pk)
