"""Conditional requests: a poller sends back the ETag it has and gets 304 until the resource changes."""

from __future__ import annotations

import pytest

from controlplane.training.models import JobStatus
from controlplane.training.services import job_transition
from tests.factories import job_make

pytestmark = pytest.mark.django_db


def test_a_polled_job_answers_304_until_it_changes(people, api_for):
    job = job_make(people["demo"], people["alice"])
    alice = api_for("alice")
    first = alice.get(f"/api/v1/jobs/{job.pk}")
    etag = first.headers["ETag"]
    assert first.status_code == 200 and etag

    unchanged = alice.get(f"/api/v1/jobs/{job.pk}", HTTP_IF_NONE_MATCH=etag)
    assert unchanged.status_code == 304 and unchanged.content == b""

    assert job_transition(job_id=job.pk, attempt=1, to=JobStatus.RUNNING, actor_label="w")
    changed = alice.get(f"/api/v1/jobs/{job.pk}", HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed.json()["status"] == "running"
    assert changed.headers["ETag"] != etag


def test_an_etag_never_opens_another_projects_resource(people, api_for):
    job = job_make(people["demo"], people["alice"])
    etag = api_for("alice").get(f"/api/v1/jobs/{job.pk}").headers["ETag"]
    assert api_for("charlie").get(f"/api/v1/jobs/{job.pk}", HTTP_IF_NONE_MATCH=etag).status_code == 404
