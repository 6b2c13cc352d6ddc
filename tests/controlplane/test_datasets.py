from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from controlplane.datasets.models import Dataset, DatasetOperation, DatasetVersion, OperationStatus
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def staging(settings, tmp_path) -> Path:
    settings.DATASET_STAGING_DIR = tmp_path / "uploads"
    settings.VAR_DIR = tmp_path / "var"
    return settings.DATASET_STAGING_DIR


def _upload(client, content: bytes, *, name: str = "chat-data", filename: str = "d.jsonl", **fields):
    return client.post(
        "/api/v1/datasets",
        {"project": "demo", "name": name, "file": SimpleUploadedFile(filename, content), **fields},
        format="multipart",
    )


def _staged_files(staging: Path) -> list[Path]:
    return [p for p in staging.rglob("*") if p.is_file()] if staging.exists() else []


GOOD = b'{"instruction": "Say hi", "output": "hi"}\n{"instruction": "Add", "input": "1 2", "output": "3"}\n'


@pytest.mark.parametrize(
    "content, message",
    [
        (GOOD + b"{not json\n", "line 3: is not valid JSON"),
        (GOOD + b'{"instruction": "x"}\n', "line 3: 'output' is missing"),
        (b'{"instruction": "", "output": "y"}\n', "line 1: 'instruction' is empty"),
        (b'{"instruction": "   ", "output": "y"}\n', "line 1: 'instruction' is empty"),
        (b'{"instruction": 5, "output": "y"}\n', "line 1: 'instruction' must be text, not a number"),
        (b'["a list"]\n', "line 1: must be an object"),
        (b'{"instruction": "x", "output": "y", "extra": 1}\n', "line 1: 'extra' is not a field"),
        (b'{"instruction": "\xff\xfe", "output": "y"}\n', "line 1: is not UTF-8 text"),
        (b'{"messages": [{"role": "robot", "content": "y"}]}\n', "line 1: 'messages[0].role' is 'robot'"),
        (b"\n\n", "The file has no rows"),
        (gzip.compress(b" " * 60_000_000), "compression bomb"),
    ],
)
def test_a_bad_file_is_refused_naming_the_line_and_nothing_is_stored(api_for, staging, content, message):
    response = _upload(api_for("alice"), content)
    assert response.status_code == 400, response.content
    assert message in response.json()["message"]
    assert not Dataset.objects.exists() and not DatasetVersion.objects.exists()
    assert DatasetOperation.objects.get().status == OperationStatus.FAILED
    assert _staged_files(staging) == []


def test_every_bad_line_is_counted_and_the_first_ones_listed(api_for):
    content = b"".join(b"nope\n" for _ in range(30))
    body = _upload(api_for("alice"), content).json()
    assert body["details"]["error_count"] == 30
    assert len(body["details"]["examples"]["syntax"]) == 20
    assert "(and 29 more)" in body["message"]


def test_a_bad_dataset_name_is_refused(api_for):
    response = _upload(api_for("alice"), GOOD, name="../Bad Name")
    assert response.status_code == 400 and "dataset name" in response.json()["message"]


def test_a_missing_file_is_refused(api_for):
    response = api_for("alice").post("/api/v1/datasets", {"project": "demo", "name": "x"}, format="multipart")
    assert response.status_code == 400 and "'file'" in response.json()["message"]


@pytest.mark.parametrize("sent", ["../../etc/passwd", "..\\..\\passwd"])
def test_a_path_traversal_filename_never_leaves_the_staging_folder(api_for, staging, mlflow_server, sent):
    # Django's upload parser keeps only the last part of a sent name (the ingest refuses any
    # other path it is handed); the file is read under that name and nothing else is written.
    stored = _upload(api_for("alice"), GOOD, filename=sent)
    assert stored.status_code == 201 and stored.json()["filename"] == "passwd"
    assert _staged_files(staging) == []
    # Staging is a folder of tmp_path, so "../../etc/passwd" from one of its folders would land
    # in tmp_path; only the version's cached copy (under var/) may carry the name.
    outside = [p for p in staging.parent.rglob("*passwd*") if not p.is_relative_to(staging.parent / "var")]
    assert outside == []


def test_a_bad_mapping_or_schema_is_refused(api_for):
    assert "mapping" in _upload(api_for("alice"), GOOD, mapping="[1]").json()["message"]
    assert "Unknown schema" in _upload(api_for("alice"), GOOD, schema="poetry").json()["message"]


def test_a_good_file_becomes_version_one_as_parquet_in_mlflow_and_the_same_content_is_not_stored_twice(
    api_for, mlflow_server, tmp_path
):
    import pyarrow.parquet as pq
    from mlflow.artifacts import download_artifacts

    first = _upload(api_for("alice"), GOOD, filename="train.jsonl")
    assert first.status_code == 201, first.content
    body = first.json()
    assert (body["version"], body["row_count"], body["format"], body["source_format"]) == (
        1,
        2,
        "instruction",
        "jsonl",
    )
    assert body["filename"] == "train.jsonl" and body["uri"].endswith("/data.parquet")
    local = download_artifacts(artifact_uri=body["uri"], dst_path=str(tmp_path), tracking_uri=mlflow_server)
    assert pq.read_table(local).to_pylist() == [
        {"instruction": "Say hi", "input": "", "output": "hi"},
        {"instruction": "Add", "input": "1 2", "output": "3"},
    ]

    # The same rows with other key order and spacing, even as CSV, are the same content.
    rows = [json.loads(line) for line in GOOD.splitlines()]
    same = b"".join(json.dumps(dict(reversed(list(r.items()))), indent=None).encode() + b"\n\n" for r in rows)
    again = _upload(api_for("bob"), same)
    assert again.status_code == 201 and again.json()["id"] == body["id"]
    as_csv = b"instruction,input,output\nSay hi,,hi\nAdd,1 2,3\n"
    assert _upload(api_for("bob"), as_csv, filename="d.csv").json()["id"] == body["id"]

    changed = _upload(api_for("bob"), GOOD + b'{"instruction": "new", "input": "", "output": "row"}\n')
    assert changed.json()["version"] == 2
    assert DatasetVersion.objects.count() == 2

    detail = api_for("viv").get(f"/api/v1/datasets/{body['id']}").json()
    assert detail["stats"]["row_count"] == 2 and detail["stats"]["fill_rates"]["input"] == 0.5


def test_a_byte_order_mark_is_accepted_and_does_not_change_the_content(api_for, mlflow_server, tmp_path):
    from workers.engine.data import read_training_rows
    from workers.spec import DatasetSchema

    plain = _upload(api_for("alice"), GOOD)
    with_bom = _upload(api_for("alice"), b"\xef\xbb\xbf" + GOOD)
    assert with_bom.status_code == 201, with_bom.content
    assert with_bom.json()["id"] == plain.json()["id"]
    # ... and the worker reads such a file the same way.
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD)
    assert [row.output for row in read_training_rows([path], DatasetSchema.INSTRUCTION)] == ["hi", "3"]


def test_a_column_mapping_and_a_named_schema_are_applied(api_for, mlflow_server):
    content = b"q,a\nSay hi,hi\n"
    response = _upload(
        api_for("alice"), content, filename="d.csv", mapping='{"instruction": "q", "output": "a"}'
    )
    assert response.status_code == 201, response.content
    assert response.json()["format"] == "instruction"
    as_text = _upload(api_for("alice"), b'{"text": "hello"}\n', name="notes", schema="text")
    assert as_text.json()["format"] == "text"


# --- large files: staged by the request, ingested by the control worker ---------------


def _large(rows: int = 3000) -> bytes:
    return b"".join(
        json.dumps({"instruction": f"question {i}", "output": f"answer {i}"}).encode() + b"\n"
        for i in range(rows)
    )


def test_a_large_upload_is_staged_and_queued_on_the_control_queue_not_parsed_in_the_request(
    api_for, settings, staging, redis_url, django_capture_on_commit_callbacks
):
    import redis

    settings.DATASET_INLINE_MAX_BYTES = 1000
    broker = redis.Redis.from_url(redis_url)
    broker.delete("control")
    with django_capture_on_commit_callbacks(execute=True):
        response = _upload(api_for("alice"), _large())
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["status"], body["progress"], body["dataset_version"]) == ("queued", 0.0, None)
    assert len(_staged_files(staging)) == 1 and not DatasetVersion.objects.exists()
    # The message on the broker names the ingest, for the control worker.
    messages = [json.loads(m) for m in broker.lrange("control", 0, -1)]
    assert [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in messages] == [
        ("datasets.operation_run", f"[{body['id']}]")
    ]
    assert api_for("viv").get(f"/api/v1/dataset-operations/{body['id']}").json()["status"] == "queued"


def test_the_ingest_task_stores_the_version_once_even_when_run_twice(
    api_for, settings, staging, mlflow_server
):
    from controlplane.datasets.tasks import dataset_operation_run

    settings.DATASET_INLINE_MAX_BYTES = 1000
    ingest_id = _upload(api_for("alice"), _large()).json()["id"]
    # What the control worker runs; a redelivered message finds the ingest taken.
    assert dataset_operation_run(ingest_id) == "succeeded"
    assert dataset_operation_run(ingest_id) == "succeeded"
    body = api_for("alice").get(f"/api/v1/dataset-operations/{ingest_id}").json()
    assert body["progress"] == 1.0 and body["dataset_version"] is not None
    assert DatasetVersion.objects.get().row_count == 3000
    assert _staged_files(staging) == []


def test_a_failed_ingest_keeps_its_report_and_stores_nothing(api_for, settings, staging):
    from controlplane.datasets.tasks import dataset_operation_run

    settings.DATASET_INLINE_MAX_BYTES = 1000
    ingest_id = _upload(api_for("alice"), _large() + b'{"instruction": "x"}\n').json()["id"]
    assert dataset_operation_run(ingest_id) == "failed"
    body = api_for("alice").get(f"/api/v1/dataset-operations/{ingest_id}").json()
    assert body["report"]["examples"] == {"missing": ["line 3001: 'output' is missing"]}
    assert not Dataset.objects.exists() and _staged_files(staging) == []


@pytest.mark.django_db(transaction=True)
def test_a_control_worker_ingests_a_large_upload_while_the_page_shows_its_progress(
    people, settings, staging, mlflow_server, redis_url
):
    """The real path: the browser's upload, Redis, a Celery worker on the control queue."""
    from django.db import connection

    if connection.vendor == "sqlite":
        # The worker runs on a thread of this process; a second connection to the in-memory
        # SQLite test database, once opened, locks its tables for the tests that follow.
        pytest.skip("a worker thread cannot share the in-memory SQLite test database; runs on PostgreSQL")
    from celery.contrib.testing.worker import start_worker
    from celery.signals import task_postrun
    from django.db import connections

    from controlplane.celery import app

    settings.DATASET_INLINE_MAX_BYTES = 1000
    browser = Client()
    assert browser.login(username="alice", password=PASSWORD)
    page = browser.post(
        "/p/demo/datasets/upload",
        {"name": "big", "file": SimpleUploadedFile("big.jsonl.gz", gzip.compress(_large(20_000)))},
    )
    assert page.status_code == 302 and "/dataset-operations/" in page["Location"]
    ingest = DatasetOperation.objects.get()
    waiting = browser.get(page["Location"]).content.decode()
    assert 'hx-get="/dataset-operations/' in waiting and "queued" in waiting

    def close_connections(**kwargs) -> None:
        # The worker's thread opened its own connection to the test database; an in-memory
        # SQLite one left open would lock tables for the tests after this one.
        connections.close_all()

    task_postrun.connect(close_connections, weak=False)
    try:
        with start_worker(
            app, queues=["control"], pool="solo", perform_ping_check=False, shutdown_timeout=30
        ):
            deadline = time.monotonic() + 60
            while not DatasetOperation.objects.get(pk=ingest.pk).is_finished and time.monotonic() < deadline:
                time.sleep(0.2)
    finally:
        task_postrun.disconnect(close_connections)
    ingest.refresh_from_db()
    assert ingest.status == OperationStatus.SUCCEEDED, ingest.message
    live = browser.get(f"/dataset-operations/{ingest.pk}/live").content.decode()
    assert "hx-get" not in live and f"/datasets/{ingest.version_id}/" in live
    assert ingest.version.row_count == 20_000 and ingest.version.source_format == "jsonl"


def test_a_failure_on_the_page_shows_the_report(people, settings, staging):
    from controlplane.datasets.tasks import dataset_operation_run

    settings.DATASET_INLINE_MAX_BYTES = 1000
    browser = Client()
    assert browser.login(username="alice", password=PASSWORD)
    bad = _large() + b"oops\n" + b'{"instruction": "x"}\n'
    page = browser.post(
        "/p/demo/datasets/upload", {"name": "big", "file": SimpleUploadedFile("b.jsonl", bad)}
    )
    dataset_operation_run(DatasetOperation.objects.get().pk)
    html = browser.get(page["Location"]).content.decode()
    assert "2 bad row(s); nothing was stored." in html
    assert "line 3001: is not valid JSON" in html and "line 3002: &#x27;output&#x27; is missing" in html


# --- the version page: stats, lineage, a preview that never runs a row's HTML -------------


def test_the_version_page_escapes_html_in_rows_and_pages_through_them(api_for, people, mlflow_server):
    rows = [{"text": "<script>alert(1)</script>"}] + [{"text": f"row {i}"} for i in range(2, 46)]
    content = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    version = _upload(api_for("alice"), content, name="notes").json()["id"]
    browser = Client()
    assert browser.login(username="viv", password=PASSWORD)
    html = browser.get(f"/datasets/{version}/").content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)" not in html
    assert "Rows 1–20" in html and "?offset=20" in html
    assert 'id="chart-bytes"' in html and "<td>bytes" in html and "<td>row_count" not in html
    last = browser.get(f"/datasets/{version}/?offset=40").content.decode()
    assert "row 45" in last and "row 2<" not in last and "?offset=60" not in last

    api_rows = api_for("viv").get(f"/api/v1/datasets/{version}/rows?offset=1&limit=2").json()["rows"]
    assert api_rows == [{"text": "row 2"}, {"text": "row 3"}]
    for bad in ("offset=-1", "limit=101", "offset=²", f"offset={2**80}"):
        assert api_for("viv").get(f"/api/v1/datasets/{version}/rows?{bad}").status_code == 400, bad


def test_the_version_page_lists_the_jobs_and_model_versions_built_from_it(api_for, people, mlflow_server):
    from controlplane.training.services import job_create
    from tests.factories import base_model_make, model_version_make
    from workers.spec import TrainingConfig

    version = _upload(api_for("alice"), GOOD).json()["id"]
    job = job_create(
        project=people["demo"],
        user=people["alice"],
        base_model_id=base_model_make(people["demo"]).pk,
        dataset_version_id=version,
        config=TrainingConfig(),
        name="lineage-job",
    )
    model_version_make(job, people["alice"], name="from-lineage")
    browser = Client()
    assert browser.login(username="alice", password=PASSWORD)
    html = browser.get(f"/datasets/{version}/").content.decode()
    assert "lineage-job" in html and "from-lineage v1" in html


def test_the_outsider_gets_404_from_the_rows_and_ingests_of_another_project(api_for, mlflow_server):
    version = _upload(api_for("alice"), GOOD).json()["id"]
    ingest = DatasetOperation.objects.get().pk
    charlie = api_for("charlie")
    for url in (f"/api/v1/datasets/{version}/rows", f"/api/v1/dataset-operations/{ingest}"):
        assert charlie.get(url).status_code == 404
    browser = Client()
    assert browser.login(username="charlie", password=PASSWORD)
    for url in (
        f"/datasets/{version}/",
        f"/dataset-operations/{ingest}/",
        f"/dataset-operations/{ingest}/live",
    ):
        assert browser.get(url).status_code == 404


# --- operations on a stored version: dedup, split, contamination, PII -----------------------


def _text_rows(texts: list[str]) -> bytes:
    return b"".join(json.dumps({"text": t}).encode() + b"\n" for t in texts)


def _run_operation(client, version: int, **body) -> dict:
    from controlplane.datasets.tasks import dataset_operation_run

    started = client.post(f"/api/v1/datasets/{version}/operations", body, format="json")
    assert started.status_code == 202, started.content
    assert dataset_operation_run(started.json()["id"]) == "succeeded"
    return client.get(f"/api/v1/dataset-operations/{started.json()['id']}").json()


def test_dedup_makes_the_next_version_with_its_report_and_lineage(api_for, mlflow_server):
    texts = [f"sentence number {i} about nothing in particular" for i in range(40)]
    version = _upload(api_for("alice"), _text_rows(texts + texts[:5]), name="notes").json()["id"]
    done = _run_operation(api_for("bob"), version, kind="dedup", threshold=0.9)
    assert (done["result"]["removed_exact"], done["result"]["kept"]) == (5, 40)
    deduped = DatasetVersion.objects.get(pk=done["dataset_version"])
    assert (deduped.version, deduped.parent_id, deduped.row_count) == (2, version, 40)
    detail = api_for("viv").get(f"/api/v1/datasets/{deduped.pk}").json()
    assert detail["parent"] == version and detail["derivation"]["removed_exact"] == 5
    # Dedup of rows with no duplicates is the same content: the same version, not a new one.
    again = _run_operation(api_for("bob"), deduped.pk, kind="dedup")
    assert again["dataset_version"] == deduped.pk and DatasetVersion.objects.count() == 2


def test_a_split_from_the_page_makes_train_validation_and_test_versions(api_for, people, mlflow_server):
    from controlplane.datasets.tasks import dataset_operation_run

    version = _upload(api_for("alice"), _text_rows([f"row {i}" for i in range(200)]), name="notes").json()[
        "id"
    ]
    browser = Client()
    assert browser.login(username="alice", password=PASSWORD)
    page = browser.post(
        f"/datasets/{version}/operations",
        {"kind": "split", "train": "0.8", "validation": "0.1", "test": "0.1", "seed": "7"},
    )
    assert page.status_code == 302
    dataset_operation_run(DatasetOperation.objects.get(kind="split").pk)
    html = browser.get(page["Location"]).content.decode()
    assert "notes-train" in html and "notes-validation" in html and "Seed 7" in html
    parts = {v.dataset.name: v for v in DatasetVersion.objects.filter(parent_id=version)}
    assert set(parts) == {"notes-train", "notes-validation", "notes-test"}
    assert sum(v.row_count for v in parts.values()) == 200


def test_the_contamination_check_and_the_pii_scan_report_on_the_version_page(api_for, people, mlflow_server):
    train = [f"the quick brown fox number {i} jumps over the lazy dog again" for i in range(30)]
    evals = [f"an unrelated question {i} with several words in it" for i in range(10)]
    evals[3] = "quote: the quick brown fox number 7 jumps over the lazy dog again, mail me at a@b.io"
    train_id = _upload(api_for("alice"), _text_rows(train), name="train-set").json()["id"]
    eval_id = _upload(api_for("alice"), _text_rows(evals), name="eval-set").json()["id"]
    found = _run_operation(api_for("alice"), eval_id, kind="contamination", train_version=train_id)
    assert found["result"]["contaminated_rows"] == 1 and found["result"]["examples"][0]["eval_row"] == 4
    pii = _run_operation(api_for("alice"), eval_id, kind="pii_scan")
    assert pii["result"]["kinds"]["email"]["examples"] == [{"row": 4, "at": 78, "match": "*@*.**"}]
    browser = Client()
    assert browser.login(username="viv", password=PASSWORD)
    html = browser.get(f"/datasets/{eval_id}/").content.decode()
    assert "1 of 10 rows overlap demo/train-set@v1" in html and "Scan for personal data" not in html
    # Before a launch, the form shows what the training set's checks found.
    assert browser.login(username="alice", password=PASSWORD)
    launch = browser.get("/p/demo/jobs/new").content.decode()
    check = launch[launch.index('id="contamination"') :]
    assert f'data-train-version="{train_id}" class="waiting"' in check
    assert "demo/train-set@v1" in check and "demo/eval-set@v1" in check and "1 of 10" in check


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"kind": "dedup", "threshold": 0.2}, 400, "'threshold' is a similarity"),
        ({"kind": "dedup", "threshold": "x"}, 400, "'threshold' must be a number"),
        ({"kind": "split", "train": 0.9, "validation": 0.9, "test": 0}, 400, "add up to 1"),
        ({"kind": "split", "train": 1, "seed": -1}, 400, "'seed' is a whole number"),
        ({"kind": "split", "train": 1, "seed": "²"}, 400, "'seed' is a whole number"),
        ({"kind": "contamination", "train_version": 2**70}, 404, "Name the training version"),
        ({"kind": "contamination"}, 404, "Name the training version"),
        ({"kind": "upload"}, 400, "'kind' is one of"),
    ],
)
def test_bad_operation_options_are_refused_and_start_nothing(api_for, mlflow_server, body, status, message):
    version = _upload(api_for("alice"), GOOD).json()["id"]
    response = api_for("alice").post(f"/api/v1/datasets/{version}/operations", body, format="json")
    assert response.status_code == status and message in response.json()["message"]
    assert not DatasetOperation.objects.exclude(kind="upload").exists()


def test_a_viewer_cannot_start_an_operation_and_the_outsider_gets_404(api_for, mlflow_server, people):
    version = _upload(api_for("alice"), GOOD).json()["id"]
    url = f"/api/v1/datasets/{version}/operations"
    assert api_for("viv").post(url, {"kind": "pii_scan"}, format="json").status_code == 403
    assert api_for("charlie").post(url, {"kind": "pii_scan"}, format="json").status_code == 404
    browser = Client()
    assert browser.login(username="charlie", password=PASSWORD)
    assert browser.post(f"/datasets/{version}/operations", {"kind": "pii_scan"}).status_code == 404
    # A training version from another project is not found either.
    other = _upload(api_for("charlie"), GOOD, name="theirs")
    assert other.status_code == 404
    assert not DatasetOperation.objects.exclude(kind="upload").exists()


def test_the_reconciler_resends_lost_operations_and_fails_those_whose_worker_died(
    api_for, people, settings, staging, redis_url
):
    from datetime import timedelta

    import redis
    from django.utils import timezone

    from controlplane.datasets.services import _finish, dataset_operations_reconcile

    settings.DATASET_INLINE_MAX_BYTES = 1000
    lost = DatasetOperation.objects.get(pk=_upload(api_for("alice"), _large()).json()["id"])
    dead = DatasetOperation.objects.get(pk=_upload(api_for("alice"), _large(), name="other").json()["id"])
    fresh = _upload(api_for("alice"), _large(), name="fresh").json()["id"]
    long_ago = timezone.now() - timedelta(hours=1)
    DatasetOperation.objects.filter(pk=lost.pk).update(created_at=long_ago)
    DatasetOperation.objects.filter(pk=dead.pk).update(status="running", heartbeat_at=long_ago)
    broker = redis.Redis.from_url(redis_url)
    broker.delete("control")

    assert dataset_operations_reconcile() == {"resent": 1, "failed": 1}
    assert [json.loads(m)["headers"]["argsrepr"] for m in broker.lrange("control", 0, -1)] == [f"[{lost.pk}]"]
    dead.refresh_from_db()
    assert dead.status == "failed" and "start it again" in dead.message
    assert len(_staged_files(staging)) == 2  # the lost one's and the fresh one's, not the dead one's
    # The dead worker, were it only slow, cannot finish it now.
    assert _finish(dead, status="succeeded").status == "failed"
    assert DatasetOperation.objects.get(pk=fresh).status == "queued"


def test_token_lengths_are_measured_with_a_base_models_tokenizer_and_long_rows_refused(
    api_for, people, staging, tiny_model_uri
):
    from controlplane.datasets.tasks import dataset_operation_run
    from controlplane.training.models import BaseModel

    base = BaseModel.objects.create(project=people["demo"], name="tiny", uri=tiny_model_uri)
    measured = _upload(api_for("alice"), GOOD, tokenizer=str(base.pk))
    # Loading a tokenizer is the control worker's job, even for a small file.
    assert measured.status_code == 202, measured.content
    assert dataset_operation_run(measured.json()["id"]) == "succeeded", DatasetOperation.objects.get().message
    tokens = DatasetVersion.objects.get().stats["tokens"]
    assert tokens["sampled_rows"] == 2 and 0 < tokens["min"] <= tokens["max"] < 30

    long_row = GOOD + json.dumps({"instruction": "add " * 40, "output": "many"}).encode() + b"\n"
    limited = _upload(api_for("alice"), long_row, name="limited", tokenizer=base.pk, max_tokens=30)
    assert dataset_operation_run(limited.json()["id"]) == "failed"
    report = DatasetOperation.objects.get(pk=limited.json()["id"]).report
    assert report["counts"] == {"too_long": 1}
    assert report["examples"]["too_long"][0].startswith("line 3: is ")
    assert report["examples"]["too_long"][0].endswith("tokens long; the limit is 30")

    elsewhere = BaseModel.objects.create(project=people["other"], name="theirs", uri=tiny_model_uri)
    refused = _upload(api_for("alice"), GOOD, name="x", tokenizer=elsewhere.pk)
    assert refused.status_code == 404 and "'tokenizer'" in refused.json()["message"]
    assert _upload(api_for("alice"), GOOD, name="y", max_tokens=5).status_code == 400
    assert _upload(api_for("alice"), GOOD, name="z", tokenizer=str(2**70)).status_code == 404


@pytest.mark.parametrize(
    "mapping",
    [
        "[" * 100_000,
        json.dumps({"output": "a\x00b"}),
        json.dumps({"output\x00": "b"}),
        json.dumps({"output": "a" * 201}),
    ],
)
def test_a_mapping_too_deep_or_holding_a_nul_byte_or_an_over_long_name_is_refused(api_for, mapping):
    response = _upload(api_for("alice"), GOOD, mapping=mapping)
    assert response.status_code == 400 and "mapping" in response.json()["message"]
    assert not DatasetOperation.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "dedup", "threshold": 10**400},
        {"kind": "dedup", "threshold": "1" * 400},
        {"kind": "split", "train": 10**400, "validation": 0, "test": 0},
    ],
)
def test_a_number_too_large_for_a_float_is_refused(api_for, mlflow_server, body):
    version = _upload(api_for("alice"), GOOD).json()["id"]
    response = api_for("alice").post(f"/api/v1/datasets/{version}/operations", body, format="json")
    assert response.status_code == 400 and "must be a number" in response.json()["message"]


def test_a_long_multibyte_file_name_is_stored_shortened(api_for, mlflow_server):
    response = _upload(api_for("alice"), GOOD, filename="数据" * 100 + ".jsonl")
    assert response.status_code == 201, response.content
    filename = response.json()["filename"]
    assert filename.startswith("数据") and filename.endswith(".jsonl") and len(filename.encode()) <= 200


def test_an_operation_failing_on_an_unforeseen_error_is_marked_failed_not_left_running(
    api_for, mlflow_server
):
    from controlplane.datasets.tasks import dataset_operation_run

    train = _upload(api_for("alice"), _text_rows(["a b c d e f g h i j"]), name="train-set").json()["id"]
    evaluation = _upload(api_for("alice"), _text_rows(["k l m n o p q r s t"]), name="eval-set").json()["id"]
    started = api_for("alice").post(
        f"/api/v1/datasets/{evaluation}/operations",
        {"kind": "contamination", "train_version": train},
        format="json",
    )
    assert started.status_code == 202, started.content
    # The training version goes away between the check being queued and it running.
    DatasetVersion.objects.filter(pk=train).delete()
    assert dataset_operation_run(started.json()["id"]) == "failed"
    operation = DatasetOperation.objects.get(pk=started.json()["id"])
    assert operation.message.startswith("The operation failed on an unexpected error")


def test_a_cached_copy_cut_short_is_dropped_and_fetched_again(api_for, mlflow_server, settings):
    version = _upload(api_for("alice"), GOOD).json()["id"]
    assert api_for("alice").get(f"/api/v1/datasets/{version}/rows").status_code == 200
    cached = list((Path(settings.VAR_DIR) / "cache" / "datasets").rglob("*.parquet"))
    assert len(cached) == 1
    cached[0].write_bytes(cached[0].read_bytes()[:100])
    again = api_for("alice").get(f"/api/v1/datasets/{version}/rows")
    assert again.status_code == 200 and again.json()["rows"][0]["instruction"] == "Say hi"
    cached[0].write_bytes(cached[0].read_bytes()[:100])
    assert _run_operation(api_for("alice"), version, kind="pii_scan")["status"] == "succeeded"


def test_a_cached_copy_whose_rows_are_damaged_is_dropped_with_a_503(api_for, mlflow_server, settings):
    version = _upload(api_for("alice"), GOOD).json()["id"]
    assert api_for("alice").get(f"/api/v1/datasets/{version}/rows").status_code == 200
    cached = next((Path(settings.VAR_DIR) / "cache" / "datasets").rglob("*.parquet"))
    # The footer still reads; the row data it points at is garbage.
    content = bytearray(cached.read_bytes())
    data_end = len(content) - 8 - int.from_bytes(content[-8:-4], "little")
    content[4:data_end] = b"\xff" * (data_end - 4)
    cached.write_bytes(bytes(content))
    broken = api_for("alice").get(f"/api/v1/datasets/{version}/rows")
    assert broken.status_code == 503 and "could not be read" in broken.json()["message"]
    assert not cached.exists()
    assert api_for("alice").get(f"/api/v1/datasets/{version}/rows").status_code == 200


# --- resumable uploads ----------------------------------------------------------------------


def _piece(client, upload_id: str, offset: int, data: bytes):
    return client.generic(
        "PATCH", f"/api/v1/uploads/{upload_id}", data, content_type="application/offset+octet-stream",
        HTTP_UPLOAD_OFFSET=str(offset),
    )  # fmt: skip


def test_a_file_sent_in_pieces_resumes_from_the_servers_offset_and_becomes_the_same_version(
    api_for, mlflow_server, staging
):
    from controlplane.datasets.models import ChunkedUpload

    content = GOOD * 3
    alice = api_for("alice")
    begun = alice.post("/api/v1/uploads", {"project": "demo", "filename": "big.jsonl", "size": len(content)},
                       format="json")  # fmt: skip
    assert begun.status_code == 201 and begun.json()["offset"] == 0, begun.content
    upload_id = begun.json()["id"]
    assert _piece(alice, upload_id, 0, content[:50]).json()["offset"] == 50
    # A client that lost track sends from the wrong offset: refused, with the offset to send from.
    wrong = _piece(alice, upload_id, 10, content[10:60])
    assert wrong.status_code == 409 and "send from offset 50" in wrong.json()["message"]
    assert wrong.headers.get("Upload-Offset") is None
    early = alice.post(f"/api/v1/uploads/{upload_id}/finish", {"name": "pieces"}, format="json")
    assert early.status_code == 409 and "50 of" in early.json()["message"]
    too_far = _piece(alice, upload_id, 50, content[50:] + b"extra")
    assert too_far.status_code == 400 and "past the file's announced size" in too_far.json()["message"]
    # The server's offset, as a client asks for it after a broken connection.
    asked = alice.get(f"/api/v1/uploads/{upload_id}")
    assert asked.json()["offset"] == 50 and asked["Upload-Offset"] == "50"
    assert _piece(alice, upload_id, 50, content[50:]).json()["offset"] == len(content)
    # Someone else cannot see, add to or finish it.
    for other in ("bob", "charlie"):
        assert api_for(other).get(f"/api/v1/uploads/{upload_id}").status_code == 404
        assert _piece(api_for(other), upload_id, len(content), b"x").status_code == 404
    bad_name = alice.post(f"/api/v1/uploads/{upload_id}/finish", {"name": "a/b"}, format="json")
    assert bad_name.status_code == 400
    done = alice.post(f"/api/v1/uploads/{upload_id}/finish", {"name": "pieces"}, format="json")
    assert done.status_code == 201, done.content
    assert done.json()["row_count"] == 6 and done.json()["filename"] == "big.jsonl"
    # The same content sent in one piece is the same version.
    assert _upload(api_for("bob"), content, name="pieces").json()["id"] == done.json()["id"]
    again = alice.post(f"/api/v1/uploads/{upload_id}/finish", {"name": "pieces"}, format="json")
    assert again.status_code == 409 and ChunkedUpload.objects.get().operation_id is not None
    assert _piece(alice, upload_id, len(content), b"x").status_code == 409
    assert _staged_files(staging) == []


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"filename": "d.jsonl", "size": 0}, 400, "'size' is the file's length"),
        ({"filename": "d.jsonl", "size": "12"}, 400, "'size' is the file's length"),
        ({"filename": "d.jsonl", "size": True}, 400, "'size' is the file's length"),
        ({"filename": "d.jsonl", "size": 10**15}, 400, "the limit is"),
        ({"filename": "../../etc/passwd", "size": 10}, 400, "is a path"),
        ({"filename": None, "size": 10}, 400, "is a path"),
        ({"project": "other", "filename": "d.jsonl", "size": 10}, 404, "Not found"),
    ],
)
def test_a_bad_resumable_upload_is_refused_and_stages_nothing(api_for, staging, body, status, message):
    from controlplane.datasets.models import ChunkedUpload

    response = api_for("alice").post("/api/v1/uploads", {"project": "demo", **body}, format="json")
    assert response.status_code == status and message in response.json()["message"], response.json()
    assert not ChunkedUpload.objects.exists() and _staged_files(staging) == []


def test_a_piece_cut_short_is_kept_up_to_where_it_stopped_and_bad_pieces_change_nothing(
    api_for, people, settings
):
    import io

    from controlplane.datasets import uploads

    alice = api_for("alice")
    upload_id = alice.post(
        "/api/v1/uploads", {"project": "demo", "filename": "d.jsonl", "size": 100}, format="json"
    ).json()["id"]
    # The connection drops 60 bytes into a 100-byte piece.
    upload = uploads.upload_append(
        user=people["alice"], upload_id=upload_id, offset=0, length=100, stream=io.BytesIO(b"a" * 60)
    )
    assert upload.received_bytes == 60 and Path(upload.staged_path).read_bytes() == b"a" * 60
    no_offset = alice.generic("PATCH", f"/api/v1/uploads/{upload_id}", b"bbbb")
    assert no_offset.status_code == 400 and "Upload-Offset" in no_offset.json()["message"]
    settings.DATASET_UPLOAD_PIECE_MAX_BYTES = 10
    too_big = _piece(alice, upload_id, 60, b"b" * 11)
    assert too_big.status_code == 400 and "at most 10 bytes" in too_big.json()["message"]
    assert alice.get(f"/api/v1/uploads/{upload_id}").json()["offset"] == 60
    assert alice.get("/api/v1/uploads/not-a-uuid").status_code == 404


def test_unfinished_uploads_nobody_adds_to_expire_with_their_bytes(api_for, settings, staging):
    from controlplane.datasets.uploads import uploads_expire

    from controlplane.datasets.models import ChunkedUpload

    alice = api_for("alice")
    upload_id = alice.post(
        "/api/v1/uploads", {"project": "demo", "filename": "d.jsonl", "size": 10}, format="json"
    ).json()["id"]
    assert uploads_expire() == 0 and len(_staged_files(staging)) == 1
    settings.DATASET_UPLOAD_EXPIRE_SECONDS = 0
    assert uploads_expire() == 1
    assert not ChunkedUpload.objects.filter(pk=upload_id).exists() and _staged_files(staging) == []
