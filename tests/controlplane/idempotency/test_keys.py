"""Idempotency-Key on the REST API: a retried request runs once and gets the first answer again."""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest
from django.conf import settings
from django.db import transaction
from mlflow import MlflowClient
from rest_framework.test import APIClient

from controlplane.idempotency.models import IdempotencyRecord
from controlplane.idempotency.services import records_expire
from controlplane.registry.models import Deployment, ModelVersion, PromotionEvent
from controlplane.registry.services import model_version_create, promotion_request
from controlplane.training.models import Job
from tests.broker import DISPATCH_QUEUE, dispatched_specs, queue_clear
from tests.controlplane.datasets.sending import staged_files
from tests.controlplane.registry.trained import trained_job_make
from tests.factories import base_model_make, dataset_version_make

SESSION_BACKEND = "django.contrib.auth.backends.ModelBackend"


@pytest.fixture
def signed_in(people):
    """A REST client signed in as one of the people, by name, as a browser is (a session)."""

    def make(name: str) -> APIClient:
        client = APIClient()
        client.force_login(people[name], backend=SESSION_BACKEND)
        return client

    return make


@pytest.fixture
def job_body(people):
    return {
        "project": "demo",
        "base_model": base_model_make(people["demo"]).pk,
        "dataset_version": dataset_version_make(people["demo"], people["alice"]).pk,
        "config": {"resources": {"queue": DISPATCH_QUEUE}},
    }


@pytest.fixture
def broker(redis_url):
    queue_clear(redis_url, DISPATCH_QUEUE)
    yield redis_url
    queue_clear(redis_url, DISPATCH_QUEUE)


def _key() -> str:
    return str(uuid.uuid4())


# --- one request, retried -------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_retry_gets_the_first_answer_and_runs_nothing(signed_in, job_body, broker):
    alice, key = signed_in("alice"), _key()

    first = alice.post("/api/v1/jobs", job_body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    retry = alice.post("/api/v1/jobs", job_body, format="json", HTTP_IDEMPOTENCY_KEY=key)

    assert first.status_code == 201 and "Idempotent-Replayed" not in first
    assert retry.status_code == 201 and retry["Idempotent-Replayed"] == "true"
    assert retry.json() == first.json() and retry["Content-Type"] == first["Content-Type"]
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_the_same_json_written_otherwise_is_the_same_request(signed_in, job_body, broker):
    alice, key = signed_in("alice"), _key()
    first = alice.post("/api/v1/jobs", job_body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    body = (
        f'{{"config": {{"resources": {{"queue": "{DISPATCH_QUEUE}"}}}}, '
        f'"dataset_version": {job_body["dataset_version"]},   "base_model": {job_body["base_model"]}, '
        '"project": "demo"}'
    )

    retry = alice.post("/api/v1/jobs", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY=key)

    assert retry["Idempotent-Replayed"] == "true" and retry.json()["id"] == first.json()["id"]
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_the_same_key_with_another_request_is_a_422_and_changes_nothing(signed_in, job_body, broker):
    alice, key = signed_in("alice"), _key()
    alice.post("/api/v1/jobs", job_body, format="json", HTTP_IDEMPOTENCY_KEY=key)

    other_body = alice.post(
        "/api/v1/jobs", {**job_body, "priority": 5}, format="json", HTTP_IDEMPOTENCY_KEY=key
    )
    other_path = alice.post("/api/v1/jobs/estimate", job_body, format="json", HTTP_IDEMPOTENCY_KEY=key)

    for refused in (other_body, other_path):
        assert refused.status_code == 422
        assert refused.json()["error"] == "idempotency_key_reused"
        assert "first used with another request" in refused.json()["message"]
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_another_callers_same_key_is_theirs_alone(signed_in, job_body, broker):
    key = _key()
    alices = signed_in("alice").post("/api/v1/jobs", job_body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    bobs = signed_in("bob").post("/api/v1/jobs", job_body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    # charlie is in another project: his request is refused as ever, never answered with alice's job.
    charlies = signed_in("charlie").post("/api/v1/jobs", job_body, format="json", HTTP_IDEMPOTENCY_KEY=key)

    alices_retry = signed_in("alice").post("/api/v1/jobs", job_body, format="json", HTTP_IDEMPOTENCY_KEY=key)

    assert alices.status_code == bobs.status_code == 201 and "Idempotent-Replayed" not in bobs
    assert bobs.json()["id"] != alices.json()["id"] and bobs.json()["created_by"] == "bob"
    assert charlies.status_code == 404 and "Idempotent-Replayed" not in charlies
    # alice's key is still hers, from another session of hers too.
    assert alices_retry["Idempotent-Replayed"] == "true" and alices_retry.json() == alices.json()
    assert Job.objects.count() == 2


@pytest.mark.django_db
def test_without_a_key_every_request_runs(signed_in, job_body, broker):
    alice, key = signed_in("alice"), _key()
    keyed = [alice.post("/api/v1/jobs", job_body, format="json", HTTP_IDEMPOTENCY_KEY=key) for _ in range(2)]
    answers = [alice.post("/api/v1/jobs", job_body, format="json") for _ in range(2)]

    assert keyed[1]["Idempotent-Replayed"] == "true"
    assert [a.status_code for a in answers] == [201, 201]
    assert len({keyed[0].json()["id"], answers[0].json()["id"], answers[1].json()["id"]}) == 3
    assert not any("Idempotent-Replayed" in a for a in answers)
    assert Job.objects.count() == 3 and IdempotencyRecord.objects.count() == 1


@pytest.mark.django_db
def test_a_refusal_is_replayed_too(signed_in, job_body, broker):
    alice, key = signed_in("alice"), _key()
    body = {**job_body, "priority": 101}
    first = alice.post("/api/v1/jobs", body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    retry = alice.post("/api/v1/jobs", body, format="json", HTTP_IDEMPOTENCY_KEY=key)

    assert first.status_code == retry.status_code == 400 and retry.json() == first.json()
    assert retry["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize(
    "key, says",
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ('""', "is empty"),
        ("k" * 256, "256 characters long; at most 255"),
        ("clé", "only printable ASCII"),
        ("tab\there", "only printable ASCII"),
        ("\x00", "only printable ASCII"),
    ],
)
@pytest.mark.django_db
def test_a_bad_key_is_a_400_that_says_why_and_runs_nothing(signed_in, job_body, broker, key, says):
    response = signed_in("alice").post("/api/v1/jobs", job_body, format="json", HTTP_IDEMPOTENCY_KEY=key)

    assert response.status_code == 400, response.content
    assert response.json()["error"] == "idempotency_key_invalid" and says in response.json()["message"]
    assert not Job.objects.exists() and not IdempotencyRecord.objects.exists()


@pytest.mark.django_db
def test_the_drafts_quoted_key_and_the_longest_key_are_accepted(signed_in, job_body, broker):
    alice, key = signed_in("alice"), "k" * 255
    plain = alice.post("/api/v1/jobs", job_body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    quoted = alice.post("/api/v1/jobs", job_body, format="json", HTTP_IDEMPOTENCY_KEY=f'"{key}"')

    assert plain.status_code == 201 and quoted["Idempotent-Replayed"] == "true"


@pytest.mark.django_db
def test_keys_expire_after_a_day(signed_in, job_body, broker):
    from datetime import timedelta

    from django.utils import timezone

    alice, key = signed_in("alice"), _key()
    first = alice.post("/api/v1/jobs", job_body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=23))
    assert records_expire() == 0
    assert alice.post("/api/v1/jobs", job_body, format="json", HTTP_IDEMPOTENCY_KEY=key)[
        "Idempotent-Replayed"
    ]

    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=24, seconds=1))
    # A day on, the key is new again: the request runs (the record is replaced as it is used) ...
    later = alice.post("/api/v1/jobs", job_body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert later.status_code == 201 and later.json()["id"] != first.json()["id"]
    assert "Idempotent-Replayed" not in later
    # ... and the hourly cleanup removes the ones nobody used again.
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=25))
    assert records_expire() == 1 and not IdempotencyRecord.objects.exists()


@pytest.mark.django_db
def test_a_5xx_answer_is_not_kept_so_the_retry_runs(signed_in, people, mlflow_server, tmp_path, settings):
    from infra import processes

    job = trained_job_make(people["demo"], people["alice"], tmp_path)
    alice, key = signed_in("alice"), _key()
    body = {"job": job.pk, "name": "flaky"}
    settings.MLFLOW_TRACKING_URI = f"http://127.0.0.1:{processes.free_port()}"  # MLflow is down

    down = alice.post("/api/v1/model-versions", body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert down.status_code == 503 and not IdempotencyRecord.objects.exists()

    settings.MLFLOW_TRACKING_URI = mlflow_server
    back = alice.post("/api/v1/model-versions", body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert back.status_code == 201 and "Idempotent-Replayed" not in back
    # That answer, a success, is the one kept.
    again = alice.post("/api/v1/model-versions", body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
    assert ModelVersion.objects.get().pk == back.json()["id"] == again.json()["id"]


@pytest.mark.django_db
def test_a_large_upload_piece_is_digested_on_the_way_and_stored_whole(signed_in, settings, tmp_path):
    settings.DATASET_STAGING_DIR = tmp_path / "uploads"
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000  # the piece is larger: it is spooled, not read into memory
    alice, key = signed_in("alice"), _key()
    content = b'{"text": "a row"}\n' * 300
    begun = alice.post(
        "/api/v1/uploads", {"project": "demo", "filename": "d.jsonl", "size": len(content)}, format="json"
    )
    upload_id = begun.json()["id"]

    def piece(data: bytes):
        return alice.generic(
            "PATCH", f"/api/v1/uploads/{upload_id}", data, content_type="application/offset+octet-stream",
            HTTP_UPLOAD_OFFSET="0", HTTP_IDEMPOTENCY_KEY=key,
        )  # fmt: skip

    sent = piece(content)
    again = piece(content)
    altered = piece(content[:-2] + b"x\n")

    assert sent.status_code == 200 and sent.json()["offset"] == len(content), sent.content
    assert again.json() == sent.json() and again["Upload-Offset"] == str(len(content))
    assert again["Idempotent-Replayed"] == "true" and altered.status_code == 422
    [staged] = staged_files(settings.DATASET_STAGING_DIR)
    assert staged.read_bytes() == content


@pytest.mark.django_db
def test_a_file_upload_is_the_same_request_only_with_the_same_bytes(
    signed_in, mlflow_server, settings, tmp_path
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.controlplane.datasets.sending import GOOD

    settings.DATASET_STAGING_DIR = tmp_path / "uploads"
    alice, key = signed_in("alice"), _key()

    def upload(content: bytes):
        body = {"project": "demo", "name": "keyed", "file": SimpleUploadedFile("d.jsonl", content)}
        return alice.post("/api/v1/datasets", body, format="multipart", HTTP_IDEMPOTENCY_KEY=key)

    first = upload(GOOD)
    again = upload(GOOD)
    other = upload(GOOD.replace(b"hi", b"ho"))

    assert first.status_code == 201, first.content
    assert again["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert other.status_code == 422


# --- API tokens ------------------------------------------------------------------------------------


def _token_client(user, **grant) -> tuple[APIClient, object]:
    from controlplane.accounts.models import TokenScope
    from controlplane.accounts.services import api_token_create

    token, secret = api_token_create(
        user=user, name=f"ci-{uuid.uuid4().hex[:6]}", scopes=[TokenScope.READ, TokenScope.WRITE], **grant
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    return client, token


@pytest.mark.django_db
def test_a_token_is_replayed_its_answer_until_it_is_revoked(people, job_body, broker):
    from controlplane.accounts.services import api_token_revoke

    pipeline, token = _token_client(people["alice"])
    key = _key()
    first = pipeline.post("/api/v1/jobs", job_body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    retry = pipeline.post("/api/v1/jobs", job_body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    bobs, _ = _token_client(people["bob"])
    other_caller = bobs.post("/api/v1/jobs", job_body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert first.status_code == 201 and retry["Idempotent-Replayed"] == "true"
    assert retry.json() == first.json() and other_caller.json()["id"] != first.json()["id"]

    api_token_revoke(token=token)
    revoked = pipeline.post("/api/v1/jobs", job_body, format="json", HTTP_IDEMPOTENCY_KEY=key)

    assert revoked.status_code == 401 and "Idempotent-Replayed" not in revoked
    assert "revoked" in revoked.json()["message"] and Job.objects.count() == 2


@pytest.mark.django_db
def test_a_new_tokens_secret_is_never_kept(signed_in):
    alice, key = signed_in("alice"), _key()
    body = {"name": "ci", "scopes": ["read"]}
    first = alice.post("/api/v1/tokens", body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    retry = alice.post("/api/v1/tokens", body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    # Another of her requests with a key is kept: keys are honoured here at all.
    alice.post("/api/v1/projects/demo/pause", {}, format="json", HTTP_IDEMPOTENCY_KEY=key + "-other")

    assert first.status_code == retry.status_code == 201 and "Idempotent-Replayed" not in retry
    assert first.json()["token"] != retry.json()["token"]
    kept = b"".join(bytes(r.response_body) for r in IdempotencyRecord.objects.all())
    assert first.json()["token"].encode() not in kept
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == [key + "-other"]


def test_the_schema_documents_the_header_and_the_registrations_two_answers():
    from drf_spectacular.generators import SchemaGenerator

    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]

    def headers(operation: dict) -> list[str]:
        return [p["name"] for p in operation.get("parameters", []) if p["in"] == "header"]

    assert "Idempotency-Key" in headers(paths["/api/v1/jobs"]["post"])
    assert "Idempotency-Key" in headers(paths["/api/v1/promotions/{promotion_id}/approve"]["post"])
    assert "Idempotency-Key" not in headers(paths["/api/v1/jobs"]["get"])
    registration = paths["/api/v1/model-versions"]["post"]["responses"]
    assert {"200", "201"} <= set(registration) and "already" in registration["200"]["description"]


# --- concurrent requests with one key -------------------------------------------------------------


def _session_http(live_server, user) -> httpx.Client:
    """An HTTP client signed in as ``user`` by a session, as a browser is, CSRF token included."""
    from django.test import Client

    browser = Client()
    browser.force_login(user, backend=SESSION_BACKEND)
    csrf = uuid.uuid4().hex  # a CSRF secret of our own, sent as cookie and header alike
    session = browser.cookies[settings.SESSION_COOKIE_NAME].value
    return httpx.Client(
        base_url=live_server.url,
        cookies={settings.SESSION_COOKIE_NAME: session, "csrftoken": csrf},
        headers={"X-CSRFToken": csrf},
        timeout=120,
    )


def _all_at_once(live_server, user, count: int, path: str, body: dict, key: str) -> tuple[list, float]:
    """``count`` identical POSTs with one key, each from its own thread and connection, released together."""
    clients = [_session_http(live_server, user) for _ in range(count)]
    for http in clients:
        # Connected beforehand (the test server keeps a connection open): the server's listen
        # queue would refuse fifty connections opened in the same instant.
        assert http.get("/api/v1/projects").status_code == 200
    barrier = threading.Barrier(count + 1)
    answers: list[httpx.Response] = []

    def send(http: httpx.Client) -> None:
        barrier.wait()
        answers.append(http.post(path, json=body, headers={"Idempotency-Key": key}))

    threads = [threading.Thread(target=send, args=(http,)) for http in clients]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.monotonic()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    for http in clients:
        http.close()
    return answers, elapsed


def _one_answer(answers: list[httpx.Response], status: int) -> dict:
    assert [a.status_code for a in answers] == [status] * len(answers), [a.text[:300] for a in answers]
    assert len({a.content for a in answers}) == 1
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == len(answers) - 1
    return answers[0].json()


@pytest.fixture
def patient(settings):
    # The machines that run the suite are shared and slow; the bound, not the outcome, is what this widens.
    settings.IDEMPOTENCY_WAIT_SECONDS = 60


@pytest.mark.django_db(transaction=True)
def test_fifty_parallel_job_submissions_with_one_key_make_one_job(
    people, job_body, broker, live_server, patient
):
    answers, elapsed = _all_at_once(live_server, people["alice"], 50, "/api/v1/jobs", job_body, _key())

    job = _one_answer(answers, 201)
    assert list(Job.objects.values_list("pk", flat=True)) == [job["id"]]
    assert [spec.job_id for spec in dispatched_specs(broker)] == [job["id"]]
    print(f"\n50 parallel job submissions, one key: {Job.objects.count()} job(s) in {elapsed:.2f} s")


@pytest.mark.django_db(transaction=True)
def test_fifty_parallel_approvals_with_one_key_approve_once(
    people, live_server, mlflow_server, tmp_path, patient
):
    job = trained_job_make(people["demo"], people["alice"], tmp_path)
    version = model_version_create(job=job, user=people["alice"], name="approved-once")
    promotion = promotion_request(model_version=version, user=people["alice"], target="production")
    path = f"/api/v1/promotions/{promotion.pk}/approve"

    answers, elapsed = _all_at_once(live_server, people["carol"], 50, path, {"comment": "ship it"}, _key())

    deployment = _one_answer(answers, 200)
    assert deployment["model_version"] == version.pk and Deployment.objects.count() == 1
    events = list(PromotionEvent.objects.filter(promotion=promotion).values_list("to_status", flat=True))
    assert events == ["requested", "approving", "approved"]
    print(f"\n50 parallel approvals, one key: {events.count('approved')} approval(s) in {elapsed:.2f} s")


@pytest.mark.django_db(transaction=True)
def test_fifty_parallel_registrations_with_one_key_register_once(
    people, live_server, mlflow_server, tmp_path, patient
):
    job = trained_job_make(people["demo"], people["alice"], tmp_path)
    body = {"job": job.pk, "name": "registered-once"}

    answers, elapsed = _all_at_once(live_server, people["alice"], 50, "/api/v1/model-versions", body, _key())

    version = _one_answer(answers, 201)
    assert list(ModelVersion.objects.values_list("pk", flat=True)) == [version["id"]]
    # The view ran once: MLflow was asked for one version (without the key, each racer asks it).
    registered = MlflowClient(mlflow_server).search_model_versions("name='demo.registered-once'")
    assert [int(v.version) for v in registered] == [version["mlflow_version"]]
    print(f"\n50 parallel registrations, one key: {len(registered)} version(s) in {elapsed:.2f} s")


@pytest.mark.django_db(transaction=True)
def test_a_retry_while_the_first_runs_waits_for_its_answer_or_gets_a_409(
    people, live_server, mlflow_server, tmp_path, settings
):
    settings.IDEMPOTENCY_WAIT_SECONDS = 1
    job = trained_job_make(people["demo"], people["alice"], tmp_path)
    body, key = {"job": job.pk, "name": "slow"}, _key()
    first: list[httpx.Response] = []

    def register(http: httpx.Client) -> None:
        first.append(http.post("/api/v1/model-versions", json=body, headers={"Idempotency-Key": key}))

    with (
        _session_http(live_server, people["alice"]) as http,
        _session_http(live_server, people["alice"]) as retry,
    ):
        with transaction.atomic():
            # The job's row locked, the first request stops where a registration waits for it.
            Job.objects.select_for_update().get(pk=job.pk)
            running = threading.Thread(target=register, args=(http,))
            running.start()
            deadline = time.monotonic() + 60
            while not IdempotencyRecord.objects.filter(key=key).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            busy = retry.post("/api/v1/model-versions", json=body, headers={"Idempotency-Key": key})
            waiting: list[httpx.Response] = []
            settings.IDEMPOTENCY_WAIT_SECONDS = 60
            waiter = threading.Thread(target=lambda: waiting.append(
                retry.post("/api/v1/model-versions", json=body, headers={"Idempotency-Key": key})
            ))  # fmt: skip
            waiter.start()
            time.sleep(0.5)
            assert waiter.is_alive()  # still waiting while the first runs
        running.join()
        waiter.join()

    assert busy.status_code == 409 and busy.json()["error"] == "idempotency_key_in_use"
    assert "still being answered" in busy.json()["message"]
    assert first[0].status_code == 201 and "Idempotent-Replayed" not in first[0].headers
    assert waiting[0].status_code == 201 and waiting[0].headers["Idempotent-Replayed"] == "true"
    assert waiting[0].json() == first[0].json() and ModelVersion.objects.count() == 1
