"""Registering a job's result: once per job and name, however often (or however concurrently) it is asked."""

from __future__ import annotations

import threading

import httpx
import pytest
from django.conf import settings
from django.test import Client
from mlflow import MlflowClient

from controlplane.registry.models import ModelVersion
from controlplane.registry.services import model_version_create
from tests.controlplane.registry.trained import trained_job_make


def _mlflow_versions(mlflow_server: str, name: str) -> list[int]:
    found = MlflowClient(mlflow_server).search_model_versions(f"name='{name}'")
    return sorted(int(v.version) for v in found)


@pytest.mark.django_db
def test_registering_a_job_again_returns_the_version_it_has(people, mlflow_server, tmp_path):
    job = trained_job_make(people["demo"], people["alice"], tmp_path)

    first = model_version_create(job=job, user=people["alice"], name="twice")
    again = model_version_create(job=job, user=people["bob"], name="twice")

    assert again == first and ModelVersion.objects.filter(job=job).count() == 1
    assert _mlflow_versions(mlflow_server, "demo.twice") == [first.version]


@pytest.mark.django_db
def test_the_api_answers_201_then_200_with_the_same_version(people, api_for, mlflow_server, tmp_path):
    job = trained_job_make(people["demo"], people["alice"], tmp_path)
    alice = api_for("alice")

    created = alice.post("/api/v1/model-versions", {"job": job.pk, "name": "again"}, format="json")
    repeated = alice.post("/api/v1/model-versions", {"job": job.pk, "name": "again"}, format="json")
    # Under another name the same result would be two versions of one source: refused, naming the first.
    renamed = alice.post("/api/v1/model-versions", {"job": job.pk, "name": "other"}, format="json")

    assert created.status_code == 201, created.content
    assert repeated.status_code == 200 and repeated.json() == created.json()
    assert (
        renamed.status_code == 409
        and f"as again v{created.json()['mlflow_version']}" in (renamed.json()["message"])
    )
    assert ModelVersion.objects.filter(job=job).count() == 1
    assert _mlflow_versions(mlflow_server, "demo.again") == [created.json()["mlflow_version"]]
    # Someone outside the project still learns nothing of it.
    outsider = api_for("charlie").post(
        "/api/v1/model-versions", {"job": job.pk, "name": "again"}, format="json"
    )
    assert outsider.status_code == 404


@pytest.mark.django_db(transaction=True)
def test_concurrent_registrations_of_one_job_without_a_key_make_one_version(
    people, live_server, mlflow_server, tmp_path
):
    job = trained_job_make(people["demo"], people["alice"], tmp_path)
    browser = Client()
    browser.force_login(people["alice"], backend="django.contrib.auth.backends.ModelBackend")
    cookies = {settings.SESSION_COOKIE_NAME: browser.cookies[settings.SESSION_COOKIE_NAME].value}
    csrf = "c" * 32  # a CSRF secret of our own, sent as cookie and header alike
    barrier = threading.Barrier(8)
    answers: list[httpx.Response] = []

    def register() -> None:
        with httpx.Client(
            base_url=live_server.url, cookies={**cookies, "csrftoken": csrf}, timeout=120
        ) as http:
            barrier.wait()
            answers.append(
                http.post("/api/v1/model-versions", json={"job": job.pk, "name": "raced"},
                          headers={"X-CSRFToken": csrf})
            )  # fmt: skip

    threads = [threading.Thread(target=register) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(a.status_code for a in answers) == [200] * 7 + [201], [a.text[:200] for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert ModelVersion.objects.filter(job=job).count() == 1
