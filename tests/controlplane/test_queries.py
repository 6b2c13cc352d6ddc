"""List endpoints cost a fixed number of queries, however many rows they return (no N+1)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.factories import job_make, model_version_make

pytestmark = pytest.mark.django_db

LISTS = [
    "/api/v1/jobs?project=demo",
    "/api/v1/datasets?project=demo",
    "/api/v1/base-models?project=demo",
    "/api/v1/model-versions?project=demo",
    "/api/v1/promotions?project=demo",
]


def _queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def test_list_endpoints_do_not_query_per_row(people, api_for):
    client = api_for("alice")
    job = job_make(people["demo"], people["alice"])
    model_version_make(job, people["alice"], name="one")
    few = {url: _queries(client, url) for url in LISTS}
    for n in range(5):
        more = job_make(people["demo"], people["bob"])
        model_version_make(more, people["bob"], name=f"more-{n}")
    many = {url: _queries(client, url) for url in LISTS}
    assert many == few


def test_creating_publishing_and_claiming_a_job_cost_a_fixed_few_statements(
    people, api_for, django_capture_on_commit_callbacks
):
    # The dispatch path's statements are its latency: each is a round trip to the
    # database. Counted here, savepoints included, so that one more shows up.
    from controlplane.training.models import Job
    from controlplane.training.services import job_claim
    from tests.factories import FACTORY_QUEUE, base_model_make, dataset_version_make

    base = base_model_make(people["demo"])
    version = dataset_version_make(people["demo"], people["alice"])
    body = {
        "project": "demo",
        "base_model": base.pk,
        "dataset_version": version.pk,
        "config": {"resources": {"queue": FACTORY_QUEUE}},
    }
    with django_capture_on_commit_callbacks() as on_commit:
        with CaptureQueriesContext(connection) as created:
            response = api_for("alice").post("/api/v1/jobs", body, format="json")
    assert response.status_code == 201
    with CaptureQueriesContext(connection) as published:
        for callback in on_commit:
            callback()
    job = Job.objects.get(pk=response.json()["id"])
    assert job.spec["job_id"] == job.pk and job.published_at is not None
    with CaptureQueriesContext(connection) as claimed:
        spec = job_claim(job_id=job.pk, attempt=1, worker="w1")
    assert spec.model_dump(mode="json") == job.spec  # the spec is built once, at the publish

    # Project with the caller's role, base model, dataset version, the workers that read its queue
    # (training.preflight); in one transaction the project's lock, the job, its event and its
    # parameters (the runs table's sort).
    assert len(created) == 10, [q["sql"][:80] for q in created]
    # The spec stored before the send, then the publish recorded after it.
    assert len(published) == 2, [q["sql"][:80] for q in published]
    # The job with its project, then the fenced transition (its read, the update, the event).
    assert len(claimed) == 6, [q["sql"][:80] for q in claimed]
