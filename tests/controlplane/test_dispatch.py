"""Jobs reach the broker only once committed, and the reconciler resends what was lost."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.training.models import Job
from controlplane.training.services import jobs_redispatch_unclaimed
from tests.broker import queue_clear, queued_specs
from tests.factories import job_make
from workers.spec import JobSpec

pytestmark = pytest.mark.django_db

QUEUE = "dispatch-test"  # no worker listens here, so messages stay to be read
CONFIG = {"resources": {"queue": QUEUE}}


def _messages(redis_url: str) -> list[JobSpec]:
    return queued_specs(redis_url, QUEUE)


@pytest.fixture
def broker(redis_url):
    queue_clear(redis_url, QUEUE)
    yield redis_url
    queue_clear(redis_url, QUEUE)


def test_a_job_is_sent_on_commit_as_a_jobspec_on_its_queue(
    people, broker, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = job_make(people["demo"], people["alice"], config=CONFIG)
    assert _messages(broker) == []  # nothing leaves before the commit
    for callback in callbacks:
        callback()
    (spec,) = _messages(broker)
    assert (spec.job_id, spec.attempt, spec.queue) == (job.pk, 1, QUEUE)
    assert spec.dataset_uris == [job.dataset_version.uri] and spec.base_model_uri == job.base_model.uri
    job.refresh_from_db()
    assert job.dispatched_at is not None


def test_the_reconciler_resends_a_queued_job_whose_message_was_lost(people, broker, settings):
    job = job_make(people["demo"], people["alice"], config=CONFIG)  # never sent: on_commit did not run
    assert jobs_redispatch_unclaimed() == 0  # too young to be called lost
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(hours=1))
    assert jobs_redispatch_unclaimed() == 1
    assert [spec.job_id for spec in _messages(broker)] == [job.pk]
    # Just resent: not again until the interval has passed.
    assert jobs_redispatch_unclaimed() == 0


def test_the_reconciler_leaves_claimed_and_finished_jobs_alone(people, broker):
    from controlplane.training.services import job_cancel, job_claim

    running = job_make(people["demo"], people["alice"], config=CONFIG)
    job_claim(job_id=running.pk, attempt=1, worker="w1")
    cancelled = job_make(people["demo"], people["alice"], config=CONFIG)
    job_cancel(job=cancelled, user=people["alice"])
    Job.objects.update(created_at=timezone.now() - timedelta(hours=1))
    assert jobs_redispatch_unclaimed() == 0
    assert _messages(broker) == []
