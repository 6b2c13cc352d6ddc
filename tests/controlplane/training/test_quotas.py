"""Per-project quotas are checked before dispatch; a waiting job says why and where it stands."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.training.models import Job
from controlplane.training.selectors import job_queue_position
from controlplane.training.services import job_cancel, job_claim, job_finish
from tests.broker import DISPATCH_QUEUE as QUEUE
from tests.broker import dispatched_specs
from tests.factories import job_make
from workers.spec import JobOutcome, JobResult

pytestmark = pytest.mark.django_db


def gpus(n: int) -> dict:
    return {"resources": {"gpus": n, "queue": QUEUE}}


@pytest.fixture
def quota(people):
    project = people["demo"]
    project.max_concurrent_gpus = 2
    project.save()
    return project


def launch(people, config, capture, **extra) -> Job:
    with capture(execute=True):
        job = job_make(people["demo"], people["alice"], config=config, **extra)
    job.refresh_from_db()
    return job


def test_a_job_over_the_gpu_quota_waits_and_goes_when_gpus_free_up(
    people, quota, broker, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    first = launch(people, gpus(2), capture)
    assert first.dispatched_at is not None and first.waiting_reason == ""
    cpu_job = launch(people, {"resources": {"queue": QUEUE}}, capture)
    assert cpu_job.dispatched_at is not None  # CPU jobs use no GPU quota

    second = launch(people, gpus(1), capture)
    assert second.dispatched_at is None
    assert second.waiting_reason == "quota: 2 of 2 GPUs of project demo are in use; this job needs 1"
    assert job_queue_position(job=second) == 3
    assert [spec.job_id for spec in dispatched_specs(broker)] == [first.pk, cpu_job.pk]

    job_claim(job_id=first.pk, attempt=1, worker="w1")
    with capture(execute=True):
        job_finish(job_id=first.pk, result=JobResult(attempt=1, worker="w1", outcome=JobOutcome.SUCCEEDED))
    second.refresh_from_db()
    assert second.dispatched_at is not None and second.waiting_reason == ""
    assert [spec.job_id for spec in dispatched_specs(broker)][-1] == second.pk


def test_waiting_jobs_go_in_priority_order(people, quota, broker, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    running = launch(people, gpus(2), capture)
    low = launch(people, gpus(2), capture, priority=0)
    high = launch(people, gpus(2), capture, priority=5)
    assert job_queue_position(job=high) < job_queue_position(job=low)
    with capture(execute=True):
        job_cancel(job=running, user=people["alice"])  # a queued, sent job frees its reservation
    high.refresh_from_db()
    low.refresh_from_db()
    assert high.dispatched_at is not None and low.dispatched_at is None
    assert "quota" in low.waiting_reason


def test_the_gpu_hours_quota_stops_new_gpu_jobs(people, broker, django_capture_on_commit_callbacks):
    project = people["demo"]
    project.gpu_hours_quota = 1.5
    project.save()
    spent = job_make(project, people["alice"], config=gpus(2))
    Job.objects.filter(pk=spent.pk).update(status="succeeded", run_seconds=3600, finished_at=timezone.now())
    waiting = launch(people, gpus(1), django_capture_on_commit_callbacks)
    assert waiting.waiting_reason == "quota: 2.0 of 1.5 GPU-hours of project demo used in the last 30 days"
    # Usage older than the period no longer counts.
    Job.objects.filter(pk=spent.pk).update(finished_at=timezone.now() - timedelta(days=31))
    from controlplane.training.services import jobs_schedule

    assert jobs_schedule(project_id=project.pk) == 1


def test_the_reason_and_position_show_on_the_page_and_the_api(
    people, quota, api_for, broker, django_capture_on_commit_callbacks
):
    from django.test import Client

    launch(people, gpus(2), django_capture_on_commit_callbacks)
    waiting = launch(people, gpus(2), django_capture_on_commit_callbacks)
    body = api_for("bob").get(f"/api/v1/jobs/{waiting.pk}").json()
    assert body["queue_position"] == 2 and body["waiting_reason"].startswith("quota: 2 of 2 GPUs")
    page = Client()
    page.force_login(people["bob"])
    html = page.get(f"/jobs/{waiting.pk}/").content.decode()
    assert "Position 2 in queue" in html and "quota: 2 of 2 GPUs" in html
    bad = api_for("alice").post(
        "/api/v1/jobs",
        {"project": "demo", "base_model": waiting.base_model_id,
         "dataset_version": waiting.dataset_version_id, "priority": 1000},
        format="json",
    )  # fmt: skip
    assert bad.status_code == 400 and "priority" in bad.json()["message"]


def test_a_waiting_job_estimates_its_start_from_the_progress_of_the_jobs_ahead(
    people, quota, api_for, broker, django_capture_on_commit_callbacks
):
    from controlplane.training.services import job_heartbeat
    from workers.spec import Heartbeat

    running = launch(people, gpus(2), django_capture_on_commit_callbacks)
    waiting = launch(people, gpus(2), django_capture_on_commit_callbacks)
    assert api_for("alice").get(f"/api/v1/jobs/{waiting.pk}").json()["start_estimate_seconds"] is None
    job_claim(job_id=running.pk, attempt=1, worker="w1")
    job_heartbeat(job_id=running.pk, heartbeat=Heartbeat(attempt=1, worker="w1", progress=0.25))
    # A quarter done in 10 minutes: about 30 minutes left.
    Job.objects.filter(pk=running.pk).update(started_at=timezone.now() - timedelta(minutes=10))
    body = api_for("alice").get(f"/api/v1/jobs/{waiting.pk}").json()
    assert body["queue_position"] == 1
    assert body["start_estimate_seconds"] == pytest.approx(1800, abs=5)


def test_a_held_job_whose_release_was_lost_goes_at_the_next_reconcile(
    people, quota, broker, django_capture_on_commit_callbacks
):
    from controlplane.training.services import jobs_redispatch_unclaimed

    capture = django_capture_on_commit_callbacks
    first = launch(people, gpus(2), capture)
    second = launch(people, gpus(2), capture)
    assert second.waiting_reason.startswith("quota:")
    job_claim(job_id=first.pk, attempt=1, worker="w1")
    # The finish commits, but the process dies before its on-commit release runs.
    with capture(execute=False):
        job_finish(job_id=first.pk, result=JobResult(attempt=1, worker="w1", outcome=JobOutcome.SUCCEEDED))
    second.refresh_from_db()
    assert second.waiting_reason.startswith("quota:")
    assert jobs_redispatch_unclaimed() == 1
    second.refresh_from_db()
    assert second.waiting_reason == "" and second.published_at is not None
    assert jobs_redispatch_unclaimed() == 0
