"""Lost attempts are retried by the reconciler, up to a limit; people retry and clone."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.errors import Conflict, Forbidden
from controlplane.training.models import Job, JobStatus, Worker
from controlplane.training.services import (
    job_cancel,
    job_claim,
    job_clone,
    job_finish,
    job_heartbeat,
    job_retry,
    jobs_recover_lost,
)
from tests.factories import job_make
from workers.spec import Heartbeat, JobOutcome, JobResult

pytestmark = pytest.mark.django_db

CONFIG = {"resources": {"queue": "recovery-test"}}  # no worker listens here


def _silence(job: Job, seconds: int = 3600) -> None:
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=seconds))


@pytest.fixture
def another_worker_is_heard():
    """Some worker heartbeats now, so the silence of one is its own, not the control plane's."""
    Worker.objects.create(name="healthy", host="h", queues=["cpu"], last_seen=timezone.now())


@pytest.fixture
def running(people):
    job = job_make(people["demo"], people["alice"], config=CONFIG)
    job_claim(job_id=job.pk, attempt=1, worker="w1")
    job_heartbeat(job_id=job.pk, heartbeat=Heartbeat(attempt=1, worker="w1", step=5, total_steps=10))
    return job


def test_a_live_attempt_is_left_alone(running):
    assert jobs_recover_lost() == {"retried": 0, "failed": 0, "cancelled": 0}
    running.refresh_from_db()
    assert running.status == JobStatus.RUNNING


def test_a_silent_attempt_is_retried_as_a_new_attempt_that_fences_the_old(
    running, another_worker_is_heard, django_capture_on_commit_callbacks
):
    _silence(running)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert jobs_recover_lost()["retried"] == 1
    assert len(callbacks) == 1  # the new attempt is dispatched on commit
    running.refresh_from_db()
    assert (running.status, running.attempt, running.step, running.worker) == (JobStatus.QUEUED, 2, 0, "")
    event = running.events.last()
    assert (event.from_status, event.to_status, event.attempt, event.actor_label) == (
        "running",
        "queued",
        2,
        "reconciler",
    )
    # The old attempt, if it still runs somewhere, is told to stop and cannot report an end.
    assert job_heartbeat(job_id=running.pk, heartbeat=Heartbeat(attempt=1, worker="w1")).stop
    with pytest.raises(Conflict):
        job_finish(job_id=running.pk, result=JobResult(attempt=1, worker="w1", outcome=JobOutcome.SUCCEEDED))
    # The new attempt is claimable once, by anyone.
    spec = job_claim(job_id=running.pk, attempt=2, worker="w2")
    assert spec.attempt == 2


def test_the_last_allowed_attempt_fails_with_the_reason(running, another_worker_is_heard, settings):
    settings.JOB_MAX_ATTEMPTS = 1
    _silence(running)
    assert jobs_recover_lost()["failed"] == 1
    running.refresh_from_db()
    assert running.status == JobStatus.FAILED
    assert "no heartbeat" in running.error and "last of 1 attempts" in running.error


def test_a_silent_cancelling_job_ends_cancelled(running, another_worker_is_heard, people):
    job_cancel(job=running, user=people["alice"])
    _silence(running)
    assert jobs_recover_lost()["cancelled"] == 1
    running.refresh_from_db()
    assert running.status == JobStatus.CANCELLED


def test_retry_runs_a_failed_job_again_and_is_idempotent(running, people):
    job_finish(
        job_id=running.pk, result=JobResult(attempt=1, worker="w1", outcome=JobOutcome.FAILED, error="x")
    )
    retried = job_retry(job=running, user=people["bob"])
    assert (retried.status, retried.attempt, retried.error) == (JobStatus.QUEUED, 2, "")
    again = job_retry(job=running, user=people["bob"])
    assert (again.status, again.attempt) == (JobStatus.QUEUED, 2)
    assert running.events.filter(to_status=JobStatus.QUEUED).count() == 2  # created, retried


def test_a_succeeded_job_is_cloned_not_retried(running, people):
    job_finish(job_id=running.pk, result=JobResult(attempt=1, worker="w1", outcome=JobOutcome.SUCCEEDED))
    with pytest.raises(Conflict, match="clone"):
        job_retry(job=running, user=people["alice"])
    clone = job_clone(job=running, user=people["bob"])
    assert clone.pk != running.pk and clone.status == JobStatus.QUEUED
    assert (clone.config, clone.base_model_id, clone.dataset_version_id) == (
        running.config,
        running.base_model_id,
        running.dataset_version_id,
    )
    assert clone.created_by == people["bob"]


def test_a_viewer_can_neither_retry_nor_clone(running, people):
    job_cancel(job=running, user=people["alice"])
    with pytest.raises(Forbidden):
        job_retry(job=running, user=people["viv"])
    with pytest.raises(Forbidden):
        job_clone(job=running, user=people["viv"])


def test_retry_and_clone_through_the_api(running, api_for):
    client = api_for("alice")
    job_finish(
        job_id=running.pk, result=JobResult(attempt=1, worker="w1", outcome=JobOutcome.FAILED, error="x")
    )
    response = client.post(f"/api/v1/jobs/{running.pk}/retry")
    assert response.status_code == 200 and response.json()["attempt"] == 2
    response = client.post(f"/api/v1/jobs/{running.pk}/clone")
    assert response.status_code == 201 and response.json()["id"] != running.pk


def test_logs_are_followed_with_a_cursor(running, api_for):
    beat = Heartbeat(attempt=1, worker="w1", log_lines=["one", "two"])
    job_heartbeat(job_id=running.pk, heartbeat=beat)
    client = api_for("bob")
    first = client.get(f"/api/v1/jobs/{running.pk}/logs").json()
    assert first["lines"] == ["one", "two"] and not first["finished"]
    job_heartbeat(job_id=running.pk, heartbeat=Heartbeat(attempt=1, worker="w1", log_lines=["three"]))
    follow = client.get(f"/api/v1/jobs/{running.pk}/logs", {"after": first["next"]}).json()
    assert follow["lines"] == ["three"]
    bad = client.get(f"/api/v1/jobs/{running.pk}/logs", {"after": "-1"})
    assert bad.status_code == 400


def test_no_job_is_retried_while_no_worker_at_all_is_heard(running, people):
    # Every worker silent at once: the control plane was deaf, not the workers dead.
    _silence(running)
    assert jobs_recover_lost()["retried"] == 0
    running.refresh_from_db()
    assert running.status == JobStatus.RUNNING
    # Once any worker is heard again, the silent job is retried.
    other = job_make(people["demo"], people["alice"], config=CONFIG)
    job_claim(job_id=other.pk, attempt=1, worker="w2")
    assert jobs_recover_lost()["retried"] == 1
