"""Every endpoint, page and API alike: an outsider gets 404, a stranger must log in,
a viewer cannot write, and nothing changes for any of them."""

from __future__ import annotations

import pytest
from django.test import Client

from controlplane.datasets.models import DatasetOperation
from controlplane.registry.models import Promotion
from controlplane.training.models import Job, JobStatus
from tests.conftest import PASSWORD
from tests.factories import job_make, model_version_make, promotion_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def objects(people):
    job = job_make(people["demo"], people["alice"])
    version = model_version_make(job, people["alice"])
    promotion = promotion_make(version, people["alice"])
    ingest = DatasetOperation.objects.create(
        project=people["demo"], name="x", filename="d.jsonl", size_bytes=1, created_by=people["alice"]
    )
    return {
        "ingest": ingest,
        "job": job,
        "dv": job.dataset_version,
        "bm": job.base_model,
        "mv": version,
        "pr": promotion,
    }


def api_endpoints(o):
    job, dv, bm, mv, pr = o["job"].pk, o["dv"].pk, o["bm"].pk, o["mv"].pk, o["pr"].pk
    return [
        ("get", "/api/v1/datasets?project=demo", None),
        ("post", "/api/v1/datasets", {"project": "demo", "name": "x", "file": b"{}"}),
        ("get", f"/api/v1/datasets/{dv}", None),
        ("get", f"/api/v1/dataset-operations/{o['ingest'].pk}", None),
        ("get", "/api/v1/base-models?project=demo", None),
        ("post", "/api/v1/base-models", {"project": "demo", "name": "m", "uri": "org/model"}),
        ("get", "/api/v1/jobs?project=demo", None),
        ("post", "/api/v1/jobs", {"project": "demo", "base_model": bm, "dataset_version": dv}),
        (
            "post",
            "/api/v1/jobs",
            {"project": "demo", "kind": "evaluate", "base_model": bm, "dataset_version": dv},
        ),
        ("post", "/api/v1/jobs/estimate", {"project": "demo", "base_model": bm, "dataset_version": dv}),
        ("get", f"/api/v1/jobs/{job}", None),
        ("post", f"/api/v1/jobs/{job}/cancel", {}),
        ("post", f"/api/v1/jobs/{job}/retry", {}),
        ("post", f"/api/v1/jobs/{job}/clone", {}),
        ("get", f"/api/v1/jobs/{job}/metrics", None),
        ("get", f"/api/v1/jobs/{job}/logs", None),
        ("get", "/api/v1/model-versions?project=demo", None),
        ("post", "/api/v1/model-versions", {"job": job, "name": "x"}),
        ("get", "/api/v1/promotions?project=demo", None),
        ("post", "/api/v1/promotions", {"model_version": mv, "target": "staging"}),
        ("post", f"/api/v1/promotions/{pr}/approve", {}),
        ("post", f"/api/v1/promotions/{pr}/reject", {}),
        ("get", "/api/v1/deployments/production?project=demo", None),
        ("get", "/api/v1/usage?project=demo", None),
    ]


def page_endpoints(o):
    job, mv, pr = o["job"].pk, o["mv"].pk, o["pr"].pk
    return [
        ("get", "/p/demo/", None),
        ("post", "/p/demo/datasets/upload", {"name": "x"}),
        ("get", f"/datasets/{o['dv'].pk}/", None),
        ("get", f"/dataset-operations/{o['ingest'].pk}/", None),
        ("get", f"/dataset-operations/{o['ingest'].pk}/live", None),
        ("get", "/p/demo/jobs/new", None),
        ("post", "/p/demo/jobs/new", {}),
        ("post", "/p/demo/jobs/estimate", {}),
        ("get", "/p/demo/jobs/evaluate", None),
        ("post", "/p/demo/jobs/evaluate", {}),
        ("get", f"/jobs/{job}/", None),
        ("get", f"/jobs/{job}/live", None),
        ("post", f"/jobs/{job}/cancel", {}),
        ("post", f"/jobs/{job}/retry", {}),
        ("post", f"/jobs/{job}/clone", {}),
        ("post", f"/jobs/{job}/register", {"name": "x"}),
        ("post", f"/model-versions/{mv}/promote", {"target": "staging"}),
        ("post", f"/promotions/{pr}/approve", {}),
        ("post", f"/promotions/{pr}/reject", {}),
    ]


def _send(client, method, url, data):
    if data is None:
        return client.get(url)
    if "file" in data:  # the dataset upload is multipart
        from django.core.files.uploadedfile import SimpleUploadedFile

        data = {**data, "file": SimpleUploadedFile("d.jsonl", data["file"])}
        return getattr(client, method)(url, data, format="multipart")
    return getattr(client, method)(url, data, format="json")


def _state(o):
    return (
        list(Job.objects.values_list("pk", "status")),
        list(Promotion.objects.values_list("pk", "status")),
        Promotion.objects.count(),
        Job.objects.count(),
    )


def test_the_outsider_gets_404_from_every_api_endpoint(objects, api_for):
    client = api_for("charlie")
    before = _state(objects)
    for method, url, data in api_endpoints(objects):
        response = _send(client, method, url, data)
        assert response.status_code == 404, (
            method,
            url,
            response.status_code,
            response.content[:300],
        )
        assert response.json()["error"] == "not_found"
    assert _state(objects) == before


def test_the_outsider_gets_404_from_every_page(objects, people):
    client = Client()
    assert client.login(username="charlie", password=PASSWORD)
    before = _state(objects)
    for method, url, data in page_endpoints(objects):
        response = getattr(client, method)(url, data or {})
        assert response.status_code == 404, (method, url, response.status_code)
    assert _state(objects) == before


def test_the_outsider_sees_no_deployments_of_other_projects(objects, api_for, people):
    from django.utils import timezone

    from controlplane.registry.models import Deployment

    Deployment.objects.create(
        project=people["demo"],
        model_name="tiny-lora",
        target="production",
        model_version=objects["mv"],
        promotion=objects["pr"],
        approved_by=people["carol"],
        approved_at=timezone.now(),
    )
    seen_by_alice = api_for("alice").get("/api/v1/deployments/production").json()["results"]
    assert [d["model_name"] for d in seen_by_alice] == ["tiny-lora"]
    response = api_for("charlie").get("/api/v1/deployments/production")
    assert response.status_code == 200 and response.json()["results"] == []


def test_a_stranger_must_authenticate(objects):
    api, pages = Client(), Client()
    for method, url, data in api_endpoints(objects):
        response = getattr(api, method)(url, data or {})
        assert response.status_code in (401, 403), (url, response.status_code)
    for method, url, data in page_endpoints(objects):
        response = getattr(pages, method)(url, data or {})
        assert response.status_code == 302 and "/login/" in response["Location"], url


def test_a_viewer_can_read_but_not_write(objects, api_for):
    client = api_for("viv")
    before = _state(objects)
    for method, url, data in api_endpoints(objects):
        response = _send(client, method, url, data)
        expected = (200,) if method == "get" else (403,)
        assert response.status_code in expected, (
            method,
            url,
            response.status_code,
            response.content[:300],
        )
    assert _state(objects) == before
    assert Job.objects.get().status == JobStatus.QUEUED


def test_the_internal_api_needs_the_worker_token(objects, api_for):
    job = objects["job"].pk
    body = {"attempt": 1, "worker": "w1"}
    anonymous = Client()
    assert (
        anonymous.post(f"/internal/v1/jobs/{job}/claim", body, content_type="application/json").status_code
        == 401
    )
    wrong = anonymous.post(
        f"/internal/v1/jobs/{job}/claim",
        body,
        content_type="application/json",
        headers={"Authorization": "Bearer not-the-token"},
    )
    assert wrong.status_code == 401
    # A user's session or token is not a worker's.
    assert api_for("alice").post(f"/internal/v1/jobs/{job}/claim", body, format="json").status_code == 403
    assert Job.objects.get().status == JobStatus.QUEUED
