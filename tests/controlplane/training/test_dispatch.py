"""Jobs reach the broker only once committed, and the reconciler resends what was lost."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.training.broker import broker_epoch
from controlplane.training.models import Job
from controlplane.training.services import jobs_redispatch_unclaimed
from tests.broker import DISPATCH_QUEUE as QUEUE
from tests.broker import dispatched_specs, queue_clear
from tests.factories import job_make

pytestmark = pytest.mark.django_db

CONFIG = {"resources": {"queue": QUEUE}}


def test_a_job_is_sent_on_commit_as_a_jobspec_on_its_queue(
    people, broker, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = job_make(people["demo"], people["alice"], config=CONFIG)
    assert dispatched_specs(broker) == []  # nothing leaves before the commit
    for callback in callbacks:
        callback()
    (spec,) = dispatched_specs(broker)
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
    assert [spec.job_id for spec in dispatched_specs(broker)] == [job.pk]
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
    assert [spec.job_id for spec in dispatched_specs(broker)] == [lost.pk]
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
    assert sorted(spec.job_id for spec in dispatched_specs(broker)) == [waiting.pk, taken.pk]
    Job.objects.update(published_at=timezone.now() - timedelta(seconds=settings.JOB_UNCLAIMED_SECONDS + 1))
    assert jobs_redispatch_unclaimed() == 0  # both wait their turn: nothing is sent twice


# A process that creates a job the way the web process does, then says it lived.
_CREATE_A_JOB = """
import django
django.setup()
from controlplane.accounts.models import Project, User
from controlplane.training.services import job_create
from workers.spec import TrainingConfig
job = job_create(
    project=Project.objects.get(slug="demo"),
    user=User.objects.get(username="alice"),
    base_model_id={base},
    dataset_version_id={version},
    config=TrainingConfig.model_validate({{"resources": {{"queue": "{queue}"}}}}),
)
print("alive", job.pk)
"""


@pytest.mark.django_db(transaction=True)
def test_the_web_process_dying_between_commit_and_publish_loses_only_the_message(people, broker, tmp_path):
    """A real process commits a job, reaches the publish and is SIGKILLed there (the fault point):
    the job stays, queued and unsent, and the reconciler sends it once."""
    import subprocess
    import sys

    from django.db import connection

    from controlplane.faults import DISPATCH_BEFORE_PUBLISH
    from tests.factories import base_model_make, dataset_version_make

    if connection.vendor != "postgresql":
        pytest.skip("another process cannot see the test database of an in-memory SQLite")
    base = base_model_make(people["demo"])
    version = dataset_version_make(people["demo"], people["alice"])
    code = _CREATE_A_JOB.format(base=base.pk, version=version.pk, queue=QUEUE)
    settings_db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "DATABASE_URL": f"postgres://{settings_db['USER']}@{settings_db['HOST']}:{settings_db['PORT']}"
        f"/{settings_db['NAME']}",
        "CELERY_BROKER_URL": broker,
        "TUNEYARD_FAULT_DIR": str(tmp_path),
    }
    (tmp_path / DISPATCH_BEFORE_PUBLISH).touch()
    died = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert died.returncode == -9, died.stderr[-2000:]
    assert died.stdout == "" and not (tmp_path / DISPATCH_BEFORE_PUBLISH).exists()

    # The commit happened before the fault: the job is stored, queued, reserved, never published.
    job = Job.objects.get()
    assert job.status == "queued" and job.dispatched_at is not None and job.published_at is None
    assert dispatched_specs(broker) == []

    # Past the grace for sends in flight, the reconciler sends it, once.
    Job.objects.update(
        created_at=timezone.now() - timedelta(hours=1), dispatched_at=timezone.now() - timedelta(hours=1)
    )
    assert jobs_redispatch_unclaimed() == 1
    assert [spec.job_id for spec in dispatched_specs(broker)] == [job.pk]

    # The same code without the trigger file lives and publishes at once.
    lived = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert lived.returncode == 0 and lived.stdout.startswith("alive"), lived.stderr[-2000:]
    assert len(dispatched_specs(broker)) == 2


def test_the_reconciler_leaves_claimed_and_finished_jobs_alone(people, broker):
    from controlplane.training.services import job_cancel, job_claim

    running = job_make(people["demo"], people["alice"], config=CONFIG)
    job_claim(job_id=running.pk, attempt=1, worker="w1")
    cancelled = job_make(people["demo"], people["alice"], config=CONFIG)
    job_cancel(job=cancelled, user=people["alice"])
    Job.objects.update(created_at=timezone.now() - timedelta(hours=1))
    assert jobs_redispatch_unclaimed() == 0
    assert dispatched_specs(broker) == []
