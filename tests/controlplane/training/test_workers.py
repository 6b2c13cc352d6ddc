from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane.training.models import Worker
from tests.factories import job_make

pytestmark = pytest.mark.django_db


def _beat(body):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {settings.WORKER_TOKEN}")
    return client.post("/internal/v1/workers/heartbeat", body, format="json")


def _body(**extra):
    return {
        "name": "gpu-1",
        "host": "node-a",
        "queues": ["gpu", "cpu"],
        "gpus": [
            {
                "index": 0,
                "name": "H200",
                "memory_total_mb": 143771,
                "memory_used_mb": 10,
                "utilization_percent": 3,
            }
        ],
        "version": "0.1.0",
    } | extra


def test_a_worker_registers_and_its_jobs_show_only_to_their_project(people, api_for):
    demo_job = job_make(people["demo"], people["alice"])
    other_job = job_make(people["other"], people["charlie"])
    assert _beat(_body(running_job_ids=[demo_job.pk, other_job.pk])).status_code == 200
    assert _beat(_body(running_job_ids=[demo_job.pk, other_job.pk], version="0.2.0")).status_code == 200
    assert Worker.objects.count() == 1

    (row,) = api_for("alice").get("/api/v1/workers").json()["results"]
    assert (row["name"], row["online"], row["version"], row["queues"]) == (
        "gpu-1",
        True,
        "0.2.0",
        ["gpu", "cpu"],
    )
    assert row["gpus"][0]["name"] == "H200"
    assert (row["running_jobs"], row["other_running_jobs"]) == ([demo_job.pk], 1)
    (seen_by_charlie,) = api_for("charlie").get("/api/v1/workers").json()["results"]
    assert (seen_by_charlie["running_jobs"], seen_by_charlie["other_running_jobs"]) == ([other_job.pk], 1)

    page = Client()
    page.force_login(people["alice"])
    html = page.get("/workers/").content.decode()
    assert "gpu-1" in html and f"job {demo_job.pk}" in html and f"job {other_job.pk}" not in html


def test_a_silent_worker_shows_offline(people, api_for):
    _beat(_body())
    Worker.objects.update(last_seen=timezone.now() - timedelta(minutes=5))
    assert api_for("bob").get("/api/v1/workers").json()["results"][0]["online"] is False


@pytest.mark.parametrize(
    "change",
    [{"queues": []}, {"name": ""}, {"gpus": [{"index": -1, "name": "x"}]}, {"running_job_ids": ["x"]}],
)
def test_a_bad_worker_heartbeat_is_refused(people, change):
    response = _beat(_body(**change))
    assert response.status_code == 400 and response.json()["message"]
    assert not Worker.objects.exists()


def test_only_workers_may_heartbeat(people, api_for):
    assert api_for("alice").post("/internal/v1/workers/heartbeat", _body(), format="json").status_code == 403
    assert not Worker.objects.exists()


def test_a_job_whose_gpus_show_no_use_is_flagged(people, api_for):
    from controlplane.training.models import Job
    from controlplane.training.services import job_claim, job_heartbeat
    from workers.spec import Heartbeat

    job = job_make(people["demo"], people["alice"], config={"resources": {"gpus": 1, "queue": "idle-test"}})
    job_claim(job_id=job.pk, attempt=1, worker="gpu-1")
    job_heartbeat(job_id=job.pk, heartbeat=Heartbeat(attempt=1, worker="gpu-1", gpu_indices=[0]))

    def gpu(util):
        return [{"index": 0, "name": "H200", "utilization_percent": util}]

    _beat(_body(running_job_ids=[job.pk], gpus=gpu(0)))
    job.refresh_from_db()
    assert job.gpu_indices == [0] and job.gpu_idle_since is not None
    assert job.gpu_idle_minutes is None  # not yet long enough to flag
    Job.objects.filter(pk=job.pk).update(gpu_idle_since=timezone.now() - timedelta(minutes=25))
    assert api_for("alice").get(f"/api/v1/jobs/{job.pk}").json()["gpu_idle_minutes"] == 25
    page = Client()
    page.force_login(people["alice"])
    assert "have shown no use for 25 minutes" in page.get(f"/jobs/{job.pk}/").content.decode()
    assert "GPUs idle 25 min" in page.get("/workers/").content.decode()

    _beat(_body(running_job_ids=[job.pk], gpus=gpu(87)))  # busy again: the clock stops
    job.refresh_from_db()
    assert job.gpu_idle_since is None
    _beat(_body(running_job_ids=[job.pk], gpus=gpu(None)))  # unknown is not idle
    job.refresh_from_db()
    assert job.gpu_idle_since is None
