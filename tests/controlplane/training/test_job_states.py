from __future__ import annotations

import threading

import pytest
from django.db import connection

from controlplane.errors import Conflict, Forbidden, NotFound
from controlplane.training.models import Job, JobEvent, JobStatus
from controlplane.training.services import (
    job_cancel,
    job_claim,
    job_finish,
    job_heartbeat,
    job_transition,
)
from tests.factories import base_model_make, dataset_version_make, job_make
from workers.spec import Heartbeat, JobOutcome, JobResult

pytestmark = pytest.mark.django_db


def _result(outcome=JobOutcome.SUCCEEDED, **extra):
    return JobResult(attempt=1, worker="w1", outcome=outcome, **extra)


def test_a_new_job_is_queued_with_an_audit_row(people):
    job = job_make(people["demo"], people["alice"])
    assert job.status == JobStatus.QUEUED
    event = job.events.get()
    assert (event.actor, event.to_status) == (people["alice"], JobStatus.QUEUED)


def test_a_bad_config_is_refused_at_the_api_and_stores_nothing(people, api_for):
    base, version = base_model_make(people["demo"]), dataset_version_make(people["demo"], people["alice"])
    body = {"project": "demo", "base_model": base.pk, "dataset_version": version.pk}
    response = api_for("alice").post(
        "/api/v1/jobs", body | {"config": {"method": {"name": "lora", "r": -3}}}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["message"] == "config.method.lora.r: Input should be greater than or equal to 1"
    assert not Job.objects.exists()


def test_a_viewer_cannot_launch_and_an_outsider_cannot_see(people):
    with pytest.raises(Forbidden):
        job_make(people["demo"], people["viv"])
    with pytest.raises(NotFound):
        job_make(people["demo"], people["charlie"])


def test_the_whole_happy_lifecycle_is_recorded(people):
    job = job_make(people["demo"], people["alice"])
    spec = job_claim(job_id=job.pk, attempt=1, worker="w1")
    assert spec.job_id == job.pk and spec.dataset_uris == [job.dataset_version.uri]
    reply = job_heartbeat(
        job_id=job.pk,
        heartbeat=Heartbeat(
            attempt=1,
            worker="w1",
            progress=0.5,
            step=5,
            total_steps=10,
            metrics={"loss": [(4, 2.5), (5, 2.4)]},
        ),
    )
    assert not reply.stop
    job_finish(
        job_id=job.pk,
        result=_result(metrics={"train_loss": 2.3}, artifacts={"adapter": "runs:/x/adapter"}),
    )
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.progress == 1.0
    assert list(job.events.values_list("to_status", flat=True)) == [
        "queued",
        "running",
        "succeeded",
    ]
    assert list(job.metric_points.values_list("step", "value")) == [(4, 2.5), (5, 2.4)]


def test_a_second_claim_of_the_same_attempt_is_refused(people):
    job = job_make(people["demo"], people["alice"])
    job_claim(job_id=job.pk, attempt=1, worker="w1")
    with pytest.raises(Conflict):
        job_claim(job_id=job.pk, attempt=1, worker="w2")
    job.refresh_from_db()
    assert job.worker == "w1"
    assert job.events.filter(to_status=JobStatus.RUNNING).count() == 1


def test_a_claim_of_a_stale_attempt_is_refused(people):
    job = job_make(people["demo"], people["alice"])
    with pytest.raises(Conflict):
        job_claim(job_id=job.pk, attempt=2, worker="w1")


def test_a_transition_loses_when_the_row_changed_after_it_was_read(people, monkeypatch):
    """The losing side of a race: another writer moves the job between our read and our update."""
    job = job_make(people["demo"], people["alice"])
    real_update = Job.objects.filter(pk=job.pk).update

    from django.db.models import QuerySet

    original = QuerySet.update
    sneaked = []

    def update_after_a_rival(self, **kwargs):
        if not sneaked:
            sneaked.append(True)
            real_update(status=JobStatus.CANCELLED)  # the rival wins first
        return original(self, **kwargs)

    monkeypatch.setattr(QuerySet, "update", update_after_a_rival)
    assert job_transition(job_id=job.pk, attempt=1, to=JobStatus.RUNNING, actor_label="w1") is False
    monkeypatch.undo()
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert not job.events.filter(to_status=JobStatus.RUNNING).exists()


@pytest.mark.django_db(transaction=True)
def test_of_two_workers_claiming_at_once_exactly_one_wins(people):
    if connection.vendor == "sqlite":
        pytest.skip("SQLite serialises writers; the race needs a server database")
    job = job_make(people["demo"], people["alice"])
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def claim(worker: str) -> None:
        barrier.wait()
        try:
            job_claim(job_id=job.pk, attempt=1, worker=worker)
            outcomes.append("won")
        except Conflict:
            outcomes.append("lost")
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["lost", "won"]
    assert JobEvent.objects.filter(job=job, to_status=JobStatus.RUNNING).count() == 1


def test_cancelling_a_queued_job_ends_it_and_is_idempotent(people):
    job = job_make(people["demo"], people["alice"])
    assert job_cancel(job=job, user=people["bob"]).status == JobStatus.CANCELLED
    assert job_cancel(job=job, user=people["bob"]).status == JobStatus.CANCELLED
    assert job.events.filter(to_status=JobStatus.CANCELLED).count() == 1
    with pytest.raises(Conflict):
        job_claim(job_id=job.pk, attempt=1, worker="w1")


def test_cancelling_a_running_job_tells_the_worker_to_stop(people):
    job = job_make(people["demo"], people["alice"])
    job_claim(job_id=job.pk, attempt=1, worker="w1")
    assert job_cancel(job=job, user=people["alice"]).status == JobStatus.CANCELLING
    reply = job_heartbeat(job_id=job.pk, heartbeat=Heartbeat(attempt=1, worker="w1"))
    assert reply.stop and reply.reason == "cancelled"
    job_finish(job_id=job.pk, result=_result(JobOutcome.CANCELLED, error="cancelled"))
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED


def test_a_finished_job_cannot_move_backwards(people):
    job = job_make(people["demo"], people["alice"])
    job_claim(job_id=job.pk, attempt=1, worker="w1")
    job_finish(job_id=job.pk, result=_result())
    # The same report again is harmless; a contradicting one is refused.
    job_finish(job_id=job.pk, result=_result())
    with pytest.raises(Conflict):
        job_finish(job_id=job.pk, result=_result(JobOutcome.FAILED, error="late"))
    assert not job_transition(job_id=job.pk, attempt=1, to=JobStatus.RUNNING)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    reply = job_heartbeat(job_id=job.pk, heartbeat=Heartbeat(attempt=1, worker="w1"))
    assert reply.stop


def test_a_heartbeat_from_another_worker_is_told_to_stop(people):
    job = job_make(people["demo"], people["alice"])
    job_claim(job_id=job.pk, attempt=1, worker="w1")
    reply = job_heartbeat(job_id=job.pk, heartbeat=Heartbeat(attempt=1, worker="intruder", step=9))
    assert reply.stop
    job.refresh_from_db()
    assert job.step == 0


def test_a_repeated_heartbeat_does_not_duplicate_points(people):
    job = job_make(people["demo"], people["alice"])
    job_claim(job_id=job.pk, attempt=1, worker="w1")
    beat = Heartbeat(attempt=1, worker="w1", metrics={"loss": [(1, 3.0)]})
    job_heartbeat(job_id=job.pk, heartbeat=beat)
    job_heartbeat(job_id=job.pk, heartbeat=beat)
    assert job.metric_points.count() == 1
