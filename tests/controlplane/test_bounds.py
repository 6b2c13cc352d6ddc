"""Every request is bounded before it is parsed, and the API answers every refusal in JSON.

A JSON body nested too deeply is a 400 and one too large a 413, whatever
content type sends it to DRF's JSON parser; Django's own refusals (too many
fields, a broken multipart body, an unknown URL, an uncaught exception) are
JSON under /api/ and /internal/ and HTML pages elsewhere. Nothing is stored.
"""

from __future__ import annotations

import json
import urllib.parse

import httpx
import pytest
from django.conf import settings
from django.test import Client
from rest_framework.test import APIClient

from controlplane.accounts.api import ProjectListApi
from controlplane.datasets.models import DatasetVersion
from controlplane.training.models import Job, Worker
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024
DEEP = 400  # RecursionError in the text check, before the limit
HEARTBEAT = {"name": "gpu-1", "host": "node-a", "queues": ["gpu"], "gpus": [{"index": 0, "name": "H200"}]}


def _nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


def _worker() -> APIClient:
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {settings.WORKER_TOKEN}")
    return client


def _refusal(response, status: int, code: str) -> str:
    """The refusal's message, once its status, JSON shape and code are checked."""
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"] == "application/json", response["Content-Type"]
    body = response.json()
    assert body["error"] == code and body["message"], body
    return body["message"]


def _too_deep(response) -> None:
    assert "deeper than 64 levels" in _refusal(response, 400, "bad_request")


# --- depth ---------------------------------------------------------------------------------------


def test_deep_json_is_a_400_on_the_token_endpoint(people):
    client = Client(raise_request_exception=False)
    body = {"username": "alice", "password": PASSWORD, "extra": json.loads(_nested(DEEP))}
    deep_objects = '{"a":' * 100_000 + "1" + "}" * 100_000
    for text in (json.dumps(body), _nested(100_000), "[" * 100_000, deep_objects):
        _too_deep(client.post("/api/v1/auth/token", text, content_type="application/json"))


def test_deep_json_is_a_400_on_a_worker_heartbeat_with_the_worker_token(people):
    body = HEARTBEAT | {"gpus": json.loads(_nested(DEEP, json.dumps(HEARTBEAT["gpus"][0])))}
    _too_deep(
        _worker().post("/internal/v1/workers/heartbeat", json.dumps(body), content_type="application/json")
    )
    assert not Worker.objects.exists()
    # At the limit it is parsed: the heartbeat's own model then says what is wrong with it.
    at_limit = HEARTBEAT | {"gpus": json.loads(_nested(63))}
    response = _worker().post("/internal/v1/workers/heartbeat", at_limit, format="json")
    assert "gpus" in _refusal(response, 400, "validation_failed")


@pytest.mark.parametrize(
    ("content_type", "encoding"),
    [
        ("application/json; charset=utf-8", "utf-8"),
        ("application/json; charset=utf-16", "utf-16"),
        ("Application/JSON", "utf-8"),
        # DRF's JSON parser takes these too: they may not go round the limit.
        ("*/*", "utf-8"),
        ("application/*", "utf-8"),
    ],
)
def test_deep_json_is_refused_whatever_content_type_brings_it_to_the_json_parser(
    api_for, content_type, encoding
):
    client = api_for("alice")
    client.raise_request_exception = False
    body = ('{"project": "demo", "config": ' + _nested(50_000) + "}").encode(encoding)
    _too_deep(client.post("/api/v1/jobs", body, content_type=content_type))
    assert not Job.objects.exists()


def test_the_depth_limit_is_a_setting_and_counts_only_arrays_and_objects(settings):
    settings.API_JSON_MAX_DEPTH = 3  # HEARTBEAT nests 3 deep: {"gpus": [{...}]}
    assert _worker().post("/internal/v1/workers/heartbeat", HEARTBEAT, format="json").status_code == 200
    # Brackets and quotes inside strings are text, not nesting.
    named = HEARTBEAT | {"name": '"\\' + "[{" * 90, "host": '\\"]' + "[" * 150}
    assert _worker().post("/internal/v1/workers/heartbeat", named, format="json").status_code == 200
    assert Worker.objects.filter(name=named["name"]).exists()

    settings.API_JSON_MAX_DEPTH = 2
    response = _worker().post("/internal/v1/workers/heartbeat", HEARTBEAT, format="json")
    assert "deeper than 2 levels" in _refusal(response, 400, "bad_request")


def test_text_deep_inside_json_is_checked_without_recursion(api_for, settings):
    settings.API_JSON_MAX_DEPTH = 1000
    client = api_for("alice")
    client.raise_request_exception = False
    body = '{"project": "demo", "config": ' + _nested(600, '"a\\u0000b"') + "}"
    response = client.post("/api/v1/jobs", body, content_type="application/json")
    assert "NUL" in _refusal(response, 400, "validation_failed")


def test_deep_json_over_a_real_socket_is_a_400(people, live_server):
    response = httpx.post(
        f"{live_server.url}/api/v1/auth/token",
        content=_nested(DEEP).encode(),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400 and response.headers["Content-Type"] == "application/json"
    assert response.json()["error"] == "bad_request"


# --- size ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/json", "*/*"])
def test_a_json_body_over_the_size_limit_is_a_413(api_for, content_type):
    client = api_for("alice")
    client.raise_request_exception = False
    body = json.dumps({"project": "demo", "name": "x" * (10 * MIB)})
    message = _refusal(client.post("/api/v1/jobs", body, content_type=content_type), 413, "too_large")
    assert "10 MiB" in message
    anonymous = Client(raise_request_exception=False)
    _refusal(anonymous.post("/api/v1/auth/token", body, content_type=content_type), 413, "too_large")
    assert not Job.objects.exists()


def test_the_json_size_limit_is_django_s_upload_limit(api_for, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    client = api_for("alice")
    client.raise_request_exception = False
    over = json.dumps({"project": "demo", "name": "x" * 2000})
    _refusal(client.post("/api/v1/jobs", over, content_type="*/*"), 413, "too_large")
    under = json.dumps({"project": "demo", "name": "x" * 500})
    # Parsed: the request model speaks.
    _refusal(client.post("/api/v1/jobs", under, content_type="*/*"), 400, "validation_failed")


# --- forms and multipart -------------------------------------------------------------------------


def test_a_form_with_too_many_fields_is_a_json_400_under_the_api_and_a_page_elsewhere(people):
    client = Client(raise_request_exception=False)
    form = "&".join(f"f{i}=1" for i in range(5000))
    urlencoded = "application/x-www-form-urlencoded"
    response = client.post("/api/v1/auth/token", form, content_type=urlencoded)
    assert "more fields than the limit of 1000" in _refusal(response, 400, "bad_request")
    multipart = client.post("/api/v1/auth/token", {f"f{i}": "1" for i in range(5000)})
    _refusal(multipart, 400, "bad_request")
    page = client.post("/", form, content_type=urlencoded)
    assert page.status_code == 400 and page["Content-Type"].startswith("text/html")


def test_a_form_field_over_the_size_limit_is_a_413(people, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    client = Client(raise_request_exception=False)
    _refusal(client.post("/api/v1/auth/token", {"username": "x" * 2000}), 413, "too_large")


def test_an_upload_whose_file_name_the_multipart_parser_cannot_read_is_a_json_400(api_for):
    client = api_for("alice")
    client.raise_request_exception = False
    name = urllib.parse.quote("\N{GRINNING FACE}" * 100 + ".jsonl")  # 400 bytes of emoji, percent-encoded
    body = (
        b"--B\r\n"
        b"Content-Disposition: form-data; name=\"file\"; filename*=utf-8''" + name.encode() + b"\r\n"
        b"Content-Type: application/octet-stream\r\n\r\n"
        b'{"instruction": "a", "output": "b"}\n\r\n'
        b'--B\r\nContent-Disposition: form-data; name="project"\r\n\r\ndemo\r\n'
        b'--B\r\nContent-Disposition: form-data; name="name"\r\n\r\nemoji\r\n--B--\r\n'
    )
    response = client.generic(
        "POST", "/api/v1/datasets", body, content_type="multipart/form-data; boundary=B"
    )
    assert "multipart body cannot be read" in _refusal(response, 400, "bad_request")
    assert not DatasetVersion.objects.exists()


# --- Django's own answers ------------------------------------------------------------------------


def test_an_unknown_path_is_a_json_404_under_the_api_and_an_html_page_elsewhere(api_for):
    client = api_for("alice")
    for path in ("/api/v1/no-such-thing", "/api/v1/jobs/not-a-number", "/api/", "/internal/v1/no-such-thing"):
        response = client.get(path)
        assert response.status_code == 404 and response["Content-Type"] == "application/json", path
        assert response.json() == {"error": "not_found", "message": "Not found."}
    page = client.get("/no-such-page")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")


def test_a_failure_under_the_api_is_a_json_500_that_tells_nothing_of_it(api_for, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("the database password is hunter2")

    monkeypatch.setattr(ProjectListApi, "get", fail)
    client = api_for("alice")
    client.raise_request_exception = False
    response = client.get("/api/v1/projects")
    assert response.status_code == 500 and response["Content-Type"] == "application/json"
    assert response.json()["error"] == "internal" and response.json()["message"]
    assert b"hunter2" not in response.content and b"Traceback" not in response.content
