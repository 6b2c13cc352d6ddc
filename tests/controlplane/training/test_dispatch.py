"""Jobs reach the broker only once committed, and the reconciler resends what was lost."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.training.broker import broker_epoch
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


def test_the_reconciler_resends_a_committed_job_that_was_never_published(people, broker):
    job = job_make(people["demo"], people["alice"], config=CONFIG)  # never sent: on_commit did not run
    assert jobs_redispatch_unclaimed() == 0  # within the grace for sends in flight
    a_minute_ago = timezone.now() - timedelta(minutes=1)
    Job.objects.filter(pk=job.pk).update(created_at=a_minute_ago, dispatched_at=a_minute_ago)
    assert jobs_redispatch_unclaimed() == 1
    assert [spec.job_id for spec in _messages(broker)] == [job.pk]
    job.refresh_from_db()
    assert job.published_at is not None and job.broker_epoch == broker_epoch() != ""
    # Published now: not sent again while the broker holds it.
    assert jobs_redispatch_unclaimed() == 0


def test_the_reconciler_resends_what_a_broker_restart_lost_and_only_that(
    people, broker, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        lost = job_make(people["demo"], people["alice"], config=CONFIG)
        kept = job_make(people["demo"], people["alice"], config=CONFIG)
    # As if ``lost`` had been published to the broker's previous run.
    Job.objects.filter(pk=lost.pk).update(broker_epoch="an-earlier-run-of-redis")
    queue_clear(broker, QUEUE)
    assert jobs_redispatch_unclaimed() == 1
    assert [spec.job_id for spec in _messages(broker)] == [lost.pk]
    assert Job.objects.get(pk=kept.pk).published_at is not None


def test_a_message_taken_by_a_worker_that_died_before_claiming_is_sent_again(
    people, broker, settings, django_capture_on_commit_callbacks
):
    from controlplane.training.services import job_dispatch

    with django_capture_on_commit_callbacks(execute=True):
        waiting = job_make(people["demo"], people["alice"], config=CONFIG)
        taken = job_make(people["demo"], people["alice"], config=CONFIG)
    # A worker takes ``taken``'s message off the queue and dies before its claim;
    # ``waiting``'s message is still in the queue.
    queue_clear(broker, QUEUE)
    job_dispatch(job_id=waiting.pk)
    assert jobs_redispatch_unclaimed() == 0  # both published just now
    Job.objects.update(published_at=timezone.now() - timedelta(seconds=settings.JOB_UNCLAIMED_SECONDS + 1))
    assert jobs_redispatch_unclaimed() == 1  # only the one no longer waiting
    assert sorted(spec.job_id for spec in _messages(broker)) == [waiting.pk, taken.pk]
    Job.objects.update(published_at=timezone.now() - timedelta(seconds=settings.JOB_UNCLAIMED_SECONDS + 1))
    assert jobs_redispatch_unclaimed() == 0  # both wait their turn: nothing is sent twice


def test_the_web_process_dying_between_commit_and_publish_loses_only_the_message(tmp_path):
    """The fault point kills the process that passes it, once per trigger file."""
    import subprocess
    import sys

    code = "from controlplane.faults import fault_point; fault_point('p'); fault_point('p'); print('alive')"
    env = {**os.environ, "TUNEYARD_FAULT_DIR": str(tmp_path)}
    assert (
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout
        == "alive\n"
    )
    (tmp_path / "p").touch()
    died = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert died.returncode == -9 and died.stdout == "" and not (tmp_path / "p").exists()


def test_the_reconciler_leaves_claimed_and_finished_jobs_alone(people, broker):
    from controlplane.training.services import job_cancel, job_claim

    running = job_make(people["demo"], people["alice"], config=CONFIG)
    job_claim(job_id=running.pk, attempt=1, worker="w1")
    cancelled = job_make(people["demo"], people["alice"], config=CONFIG)
    job_cancel(job=cancelled, user=people["alice"])
    Job.objects.update(created_at=timezone.now() - timedelta(hours=1))
    assert jobs_redispatch_unclaimed() == 0
    assert _messages(broker) == []
