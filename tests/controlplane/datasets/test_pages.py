"""The dataset pages: an upload's progress and report, a version's rows, lineage and operations."""

from __future__ import annotations

import gzip
import json
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from controlplane.datasets.models import DatasetOperation, DatasetVersion, OperationStatus
from tests.conftest import PASSWORD
from tests.controlplane.datasets.sending import (
    GOOD,
    large_jsonl,
    run_operation,
    text_rows,
    upload,
)

pytestmark = pytest.mark.django_db


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
        {"name": "big", "file": SimpleUploadedFile("big.jsonl.gz", gzip.compress(large_jsonl(20_000)))},
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
    bad = large_jsonl() + b"oops\n" + b'{"instruction": "x"}\n'
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
    version = upload(api_for("alice"), content, name="notes").json()["id"]
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

    version = upload(api_for("alice"), GOOD).json()["id"]
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


def test_a_split_from_the_page_makes_train_validation_and_test_versions(api_for, people, mlflow_server):
    from controlplane.datasets.tasks import dataset_operation_run

    version = upload(api_for("alice"), text_rows([f"row {i}" for i in range(200)]), name="notes").json()["id"]
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
    train_id = upload(api_for("alice"), text_rows(train), name="train-set").json()["id"]
    eval_id = upload(api_for("alice"), text_rows(evals), name="eval-set").json()["id"]
    found = run_operation(api_for("alice"), eval_id, kind="contamination", train_version=train_id)
    assert found["result"]["contaminated_rows"] == 1 and found["result"]["examples"][0]["eval_row"] == 4
    pii = run_operation(api_for("alice"), eval_id, kind="pii_scan")
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
