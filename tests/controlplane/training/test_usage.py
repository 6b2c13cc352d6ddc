"""Run time and GPU-hours are accounted per attempt, and summed per person and project."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.training.models import Job
from controlplane.training.services import job_cancel, job_claim, job_finish, job_retry
from tests.factories import job_make
from workers.spec import JobOutcome, JobResult

pytestmark = pytest.mark.django_db

TWO_GPUS = {"resources": {"gpus": 2, "queue": "usage-test"}}


def _ran_for(job: Job, seconds: int) -> None:
    Job.objects.filter(pk=job.pk).update(started_at=timezone.now() - timedelta(seconds=seconds))


def _finish(job: Job, attempt: int, outcome=JobOutcome.SUCCEEDED) -> None:
    error = "" if outcome is not JobOutcome.FAILED else "boom"
    job_finish(job_id=job.pk, result=JobResult(attempt=attempt, worker="w", outcome=outcome, error=error))


def test_an_attempt_is_accounted_once_even_through_cancelling(people):
    job = job_make(people["demo"], people["alice"], config=TWO_GPUS)
    job_claim(job_id=job.pk, attempt=1, worker="w")
    _ran_for(job, 1800)
    job_cancel(job=job, user=people["alice"])  # running -> cancelling: still running
    _finish(job, 1, JobOutcome.CANCELLED)
    job.refresh_from_db()
    assert job.run_seconds == pytest.approx(1800, abs=5)
    assert job.gpu_hours == pytest.approx(1.0, abs=0.01)


def test_retried_attempts_add_up(people):
    job = job_make(people["demo"], people["alice"], config=TWO_GPUS)
    job_claim(job_id=job.pk, attempt=1, worker="w")
    _ran_for(job, 3600)
    _finish(job, 1, JobOutcome.FAILED)
    job_retry(job=job, user=people["alice"])
    job_claim(job_id=job.pk, attempt=2, worker="w")
    _ran_for(job, 1800)
    _finish(job, 2)
    job.refresh_from_db()
    assert job.run_seconds == pytest.approx(5400, abs=5)
    assert job.gpu_hours == pytest.approx(3.0, abs=0.01)


def test_a_job_that_never_ran_costs_nothing(people):
    job = job_make(people["demo"], people["alice"], config=TWO_GPUS)
    job_cancel(job=job, user=people["alice"])
    job.refresh_from_db()
    assert job.run_seconds == 0


def test_usage_per_person_through_the_api_and_the_page(people, api_for):
    from django.test import Client

    for user, seconds, config in (("alice", 3600, TWO_GPUS), ("bob", 7200, {})):
        job = job_make(people["demo"], people[user], config=config)
        job_claim(job_id=job.pk, attempt=1, worker="w")
        _ran_for(job, seconds)
        _finish(job, 1)
    body = api_for("carol").get("/api/v1/usage", {"project": "demo"}).json()
    by_user = {row["user"]: row for row in body["by_user"]}
    assert by_user["alice"]["gpu_hours"] == pytest.approx(2.0, abs=0.01)
    assert by_user["bob"]["gpu_hours"] == 0 and by_user["bob"]["run_hours"] == pytest.approx(2.0, abs=0.01)
    assert body["total"]["jobs"] == 2 and body["total"]["run_hours"] == pytest.approx(3.0, abs=0.01)
    assert api_for("charlie").get("/api/v1/usage", {"project": "demo"}).status_code == 404
    assert api_for("alice").get("/api/v1/usage", {"project": "demo", "days": "0"}).status_code == 400

    page = Client()
    page.force_login(people["carol"])
    # The per-person card moved from the overview to the project's dashboard.
    html = page.get("/p/demo/dashboard").content.decode()
    assert 'id="usage-chart"' in html and "usage-data" in html
