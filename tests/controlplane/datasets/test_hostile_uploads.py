"""Uploads built to mislead or exhaust: refused with a sentence at the edge, or left to the control
worker, whose refusal names the row; a sent name is only ever a cleaned label."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

from controlplane.datasets.models import ChunkedUpload, DatasetOperation, DatasetVersion, OperationStatus
from tests.conftest import PASSWORD
from tests.controlplane.datasets.sending import GOOD, piece_send, staged_files, upload

pytestmark = pytest.mark.django_db


def _nothing_made(staging: Path) -> None:
    assert not DatasetOperation.objects.exists() and not DatasetVersion.objects.exists()
    assert staged_files(staging) == []


# --- the parts of a multipart upload --------------------------------------------------------


def test_two_file_parts_in_one_upload_are_refused_and_nothing_is_staged(api_for, staging):
    files = [SimpleUploadedFile("a.jsonl", GOOD), SimpleUploadedFile("b.jsonl", b'{"text": "other"}\n')]
    response = api_for("alice").post(
        "/api/v1/datasets", {"project": "demo", "name": "two", "file": files}, format="multipart"
    )
    assert response.status_code == 400
    assert response.json()["message"] == "The upload holds 2 'file' parts; send one file per upload."
    browser = Client()
    assert browser.login(username="alice", password=PASSWORD)
    page = browser.post(
        "/p/demo/datasets/upload", {"name": "two", "file": files}, HTTP_REFERER="http://testserver/p/demo/"
    )
    assert page.status_code == 302
    assert "The upload holds 2 &#x27;file&#x27; parts" in browser.get(page["Location"]).content.decode()
    _nothing_made(staging)


def test_a_field_sent_twice_is_refused(api_for, staging):
    response = upload(api_for("alice"), GOOD, name=["first", "second"])
    assert response.status_code == 400
    assert response.json()["message"] == "The field 'name' is sent 2 times; send it once."
    _nothing_made(staging)


@pytest.mark.parametrize(
    "charset, message",
    [
        ("no-such-charset", "declares the charset 'no-such-charset', which is unknown"),
        ("latin-1", "declares it as iso8859-1 text; only UTF-8 is read"),
    ],
)
def test_a_file_part_declaring_an_unknown_or_other_charset_is_refused(api_for, staging, charset, message):
    part = SimpleUploadedFile("d.jsonl", GOOD, content_type=f"application/jsonl; charset={charset}")
    response = api_for("alice").post(
        "/api/v1/datasets", {"project": "demo", "name": "c", "file": part}, format="multipart"
    )
    assert response.status_code == 400 and message in response.json()["message"], response.json()
    _nothing_made(staging)


def test_a_file_part_declaring_utf8_is_stored(api_for, mlflow_server):
    part = SimpleUploadedFile("d.jsonl", GOOD, content_type="application/jsonl; charset=UTF-8")
    response = api_for("alice").post(
        "/api/v1/datasets", {"project": "demo", "name": "c", "file": part}, format="multipart"
    )
    assert response.status_code == 201, response.content


def test_a_request_declaring_an_unknown_charset_is_refused(api_for, staging):
    body = encode_multipart(
        BOUNDARY, {"project": "demo", "name": "c", "file": SimpleUploadedFile("d.jsonl", GOOD)}
    )
    response = api_for("alice").generic(
        "POST", "/api/v1/datasets", body, content_type=f"{MULTIPART_CONTENT}; charset=no-such-charset"
    )
    assert response.status_code == 400 and "which is unknown" in response.json()["message"]
    _nothing_made(staging)


# --- rows the control worker must name, not crash on ------------------------------------------------


def test_an_answer_of_5001_digits_is_refused_naming_the_row(api_for, staging):
    content = b'{"question": "q", "choices": ["a", "b"], "answer": ' + b"7" * 5001 + b"}\n"
    response = upload(api_for("alice"), content, name="mc")
    assert response.status_code == 400
    message = response.json()["message"]
    assert "line 1: 'answer' is a number of 5,001 digits, not one of the 2 choices" in message
    assert DatasetOperation.objects.get().status == OperationStatus.FAILED
    assert not DatasetVersion.objects.exists() and staged_files(staging) == []


# --- compressed files: never read by the web request -------------------------------------------------


def test_a_small_compressed_upload_is_left_to_the_control_worker_under_a_name_of_its_own(
    api_for, staging, mlflow_server
):
    from controlplane.datasets.tasks import dataset_operation_run

    response = upload(api_for("alice"), gzip.compress(GOOD), filename="small.jsonl.gz")
    assert response.status_code == 202, response.content
    (staged,) = staged_files(staging)
    # Named by its staging id, never by the sent name.
    assert staged.name == staged.parent.name and "small" not in str(staged.relative_to(staging))
    assert dataset_operation_run(response.json()["id"]) == "succeeded"
    version = DatasetOperation.objects.get().version
    assert version.filename == "small.jsonl.gz" and version.row_count == 2
    assert staged_files(staging) == []


@pytest.mark.parametrize(
    "filename, content, message",
    [
        ("bomb.jsonl.gz", gzip.compress((b" " * 99 + b"\n") * 600_000), "compression bomb"),
        ("bomb.jsonl.gz", gzip.compress(b"\0" * 50_000_000), "line 1: is longer than 1,048,576 bytes"),
        ("plain.jsonl.gz", GOOD, "'plain.jsonl.gz' is named as gzip-compressed but its content is not"),
    ],
)
def test_a_bomb_or_a_mislabelled_file_is_refused_by_the_control_worker(
    api_for, staging, filename, content, message
):
    from controlplane.datasets.tasks import dataset_operation_run

    response = upload(api_for("alice"), content, filename=filename)
    assert response.status_code == 202, response.content
    assert dataset_operation_run(response.json()["id"]) == "failed"
    operation = DatasetOperation.objects.get()
    assert message in operation.message
    assert not DatasetVersion.objects.exists() and staged_files(staging) == []


# --- names --------------------------------------------------------------------------------------


HOSTILE_NAMES = [
    ("data\r\nX-Injected: 1\r\n.jsonl", "dataX-Injected: 1.jsonl"),
    ("invoice\u202egpj.jsonl", "invoicegpj.jsonl"),
    ("%2e%2e%2f%2e%2e%2fetc%2fpasswd.jsonl", "passwd.jsonl"),
    ("\uff0e\uff0e\uff0f\uff0e\uff0e\uff0fsecret.jsonl", "secret.jsonl"),
    ("../../etc/passwd", "passwd"),
    ("n" * 5000 + ".jsonl", "n" * 194 + ".jsonl"),
]


@pytest.mark.parametrize("sent, kept", HOSTILE_NAMES)
def test_a_resumable_upload_keeps_a_cleaned_name_and_stages_under_its_own_id(api_for, staging, sent, kept):
    begun = api_for("alice").post(
        "/api/v1/uploads", {"project": "demo", "filename": sent, "size": len(GOOD)}, format="json"
    )
    assert begun.status_code == 201, begun.content
    assert begun.json()["filename"] == kept
    upload_row = ChunkedUpload.objects.get()
    assert upload_row.filename == kept
    (staged,) = staged_files(staging)
    assert staged == Path(upload_row.staged_path) and staged.name == upload_row.pk.hex == staged.parent.name


def test_a_finished_resumable_upload_stores_its_version_under_the_cleaned_name(
    api_for, mlflow_server, staging
):
    alice = api_for("alice")
    sent = "report\u202e\r\nlnosj.jsonl"
    upload_id = alice.post(
        "/api/v1/uploads", {"project": "demo", "filename": sent, "size": len(GOOD)}, format="json"
    ).json()["id"]
    assert piece_send(alice, upload_id, 0, GOOD).status_code == 200
    done = alice.post(f"/api/v1/uploads/{upload_id}/finish", {"name": "named"}, format="json")
    assert done.status_code == 201, done.content
    assert done.json()["filename"] == "reportlnosj.jsonl"
    assert DatasetOperation.objects.get().filename == "reportlnosj.jsonl"


@pytest.mark.parametrize(
    "sent, kept",
    [("%2e%2e%2fsecret.jsonl", "secret.jsonl"), ("data\uff0ejsonl", "data.jsonl")],
)
def test_a_one_piece_upload_keeps_a_cleaned_name(api_for, mlflow_server, sent, kept):
    response = upload(api_for("alice"), GOOD, filename=sent)
    assert response.status_code == 201, response.content
    assert response.json()["filename"] == kept


# --- the version page ---------------------------------------------------------------------------


def test_the_version_page_shows_a_long_cell_cut_short_and_the_api_gives_it_whole(api_for, mlflow_server):
    long_text = "w" * 200_000
    content = (
        json.dumps({"text": long_text}).encode() + b"\n" + json.dumps({"text": "short"}).encode() + b"\n"
    )
    version = upload(api_for("alice"), content, name="long").json()["id"]
    browser = Client()
    assert browser.login(username="alice", password=PASSWORD)
    html = browser.get(f"/datasets/{version}/").content.decode()
    assert len(html) < 60_000
    assert "w" * 2_000 + "… (198,000 more characters)" in html and "short" in html
    rows = api_for("alice").get(f"/api/v1/datasets/{version}/rows").json()["rows"]
    assert rows[0]["text"] == long_text
