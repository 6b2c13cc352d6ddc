"""Odd and hostile inputs get a 4xx with a sentence, never a 500, and change nothing."""

from __future__ import annotations

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from controlplane.training.models import Job
from tests.factories import job_make, model_version_make

pytestmark = pytest.mark.django_db

HUGE = 10**30
BIG = 2**63  # one past PostgreSQL's bigint


@pytest.fixture
def job(people):
    return job_make(people["demo"], people["alice"])


def _check(response, statuses=(400, 404, 405, 409, 413, 415)):
    assert response.status_code in statuses, (response.status_code, response.content[:500])
    body = response.json()
    assert body["error"] and body["message"], body


def test_odd_job_submissions(api_for, job):
    client = api_for("alice")
    before = Job.objects.count()
    bodies = [
        [],
        ["project", "demo"],
        "just a string",
        {"project": ["demo"]},
        {"project": {"slug": "demo"}},
        {"project": "demo", "base_model": HUGE, "dataset_version": job.dataset_version_id},
        {"project": "demo", "base_model": BIG, "dataset_version": BIG},
        {"project": "demo", "base_model": -1, "dataset_version": 1},
        {"project": "demo", "base_model": 1.5, "dataset_version": True},
        {
            "project": "demo",
            "base_model": job.base_model_id,
            "dataset_version": job.dataset_version_id,
            "config": [],
        },
        {
            "project": "demo",
            "base_model": job.base_model_id,
            "dataset_version": job.dataset_version_id,
            "config": {"hyperparameters": {"batch_size": HUGE}},
        },
        {"project": "x" * 10_000},
        {"project": "dé\x00mo"},
    ]
    for body in bodies:
        _check(client.post("/api/v1/jobs", body, format="json"))
    _check(client.post("/api/v1/jobs", b"{not json", content_type="application/json"))
    assert Job.objects.count() == before


def test_qlora_without_gpus_is_a_400_that_says_why_and_the_new_methods_are_accepted(api_for, job):
    client = api_for("alice")
    inputs = {"project": "demo", "base_model": job.base_model_id, "dataset_version": job.dataset_version_id}

    refused = client.post("/api/v1/jobs", {**inputs, "config": {"method": {"name": "qlora"}}}, format="json")
    assert refused.status_code == 400
    assert "QLoRA (4-bit bitsandbytes) needs a CUDA GPU" in refused.json()["message"]
    for method in ("prefix_tuning", "p_tuning", "prompt_tuning", "ia3"):
        config = {"method": {"name": method}}
        accepted = client.post("/api/v1/jobs", {**inputs, "config": config}, format="json")
        assert accepted.status_code == 201, accepted.content[:500]
        assert Job.objects.get(pk=accepted.json()["id"]).config["method"]["name"] == method


def test_nul_characters_are_refused_everywhere(api_for, job, people):
    from django.test import Client

    api = api_for("alice")
    nul_query = api.get("/api/v1/jobs?project=demo&x=\x00")
    assert nul_query.status_code == 400 and "NUL" in nul_query.json()["message"]
    surrogate = api.post(
        "/api/v1/jobs", b'{"project": "demo", "name": "\\ud800"}', content_type="application/json"
    )
    assert surrogate.status_code == 400 and "surrogates" in surrogate.json()["message"]
    _check(api.post("/api/v1/jobs", {"project": "demo", "name": "a\x00b"}, format="json"))
    _check(api.post("/api/v1/jobs", {"project": "demo", "config": {"k\x00": 1}}, format="json"))
    _check(
        api.post("/api/v1/base-models", {"project": "demo", "name": "m", "uri": "a\x00"}, format="multipart")
    )
    page = Client()
    page.force_login(people["alice"])
    version = model_version_make(job, people["alice"])
    response = page.post(f"/model-versions/{version.pk}/promote", {"target": "staging", "comment": "\x00"})
    assert response.status_code == 400
    assert not version.promotions.exists()


@pytest.mark.parametrize(
    "url",
    [
        f"/api/v1/jobs/{HUGE}",
        f"/api/v1/jobs/{BIG}/metrics",
        f"/api/v1/datasets/{BIG}",
        "/api/v1/deployments/the-moon",
        "/api/v1/deployments/production?project=nope",
        "/api/v1/jobs?project=",
        f"/jobs/{BIG}/",
    ],
)
def test_odd_reads(api_for, job, people, url):
    if url.startswith("/jobs/"):  # a page
        from django.test import Client

        client = Client()
        client.force_login(people["alice"])
        assert client.get(url).status_code == 404
    else:
        _check(api_for("alice").get(url))


def test_odd_registry_requests_are_refused_each_with_its_status_and_store_nothing(api_for, job, people):
    from controlplane.registry.models import Deployment, ModelVersion, Promotion

    client = api_for("alice")
    version = model_version_make(job, people["alice"])
    before = (ModelVersion.objects.count(), Promotion.objects.count(), Deployment.objects.count())
    cases = [
        ("/api/v1/model-versions", {"job": BIG, "name": "x"}, 400, "job: Input should be less than"),
        ("/api/v1/model-versions", {"job": job.pk + 1000, "name": "x"}, 404, ""),
        ("/api/v1/model-versions", {"job": job.pk, "name": "Ünïcode"}, 400, "name"),
        ("/api/v1/promotions", {"model_version": version.pk, "target": None}, 400, "target: Input should be"),
        (
            "/api/v1/promotions",
            {"model_version": "1; drop table"},
            400,
            "model_version: must be a whole number",
        ),
        ("/api/v1/promotions", [], 400, "must be a JSON object"),
        (f"/api/v1/promotions/{BIG}/approve", {}, 404, ""),
    ]
    for url, body, status, message in cases:
        response = client.post(url, body, format="json")
        _check(response, statuses=(status,))
        assert message in response.json()["message"], (url, body, response.json())
    assert (ModelVersion.objects.count(), Promotion.objects.count(), Deployment.objects.count()) == before


def test_odd_worker_events(job):
    worker = APIClient()
    worker.credentials(HTTP_AUTHORIZATION=f"Bearer {settings.WORKER_TOKEN}")
    cases = [
        (f"/internal/v1/jobs/{job.pk}/claim", {"attempt": 0, "worker": "w"}),
        (f"/internal/v1/jobs/{job.pk}/claim", {"attempt": BIG, "worker": "w"}),
        (f"/internal/v1/jobs/{BIG}/claim", {"attempt": 1, "worker": "w"}),
        (f"/internal/v1/jobs/{job.pk}/claim", []),
        (f"/internal/v1/jobs/{job.pk}/heartbeat", {"attempt": 1, "worker": "w", "metrics": {"loss": [1, 2]}}),
        (f"/internal/v1/jobs/{job.pk}/heartbeat", {"attempt": 1, "worker": "w", "progress": 7}),
        (f"/internal/v1/jobs/{job.pk}/finish", {"attempt": 1, "worker": "w", "outcome": "exploded"}),
        (f"/internal/v1/jobs/{job.pk}/finish", {"attempt": 1, "worker": "w", "outcome": "failed"}),
        (f"/internal/v1/jobs/{job.pk}/finish", {"attempt": 1, "worker": "w", "outcome": "succeeded"}),
    ]
    for url, body in cases:
        _check(worker.post(url, body, format="json"))
    job.refresh_from_db()
    assert job.status == "queued"
