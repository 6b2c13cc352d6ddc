"""The ingest task and operations on a stored version (dedup, split, checks): run once, reconciled."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from controlplane.datasets.models import Dataset, DatasetOperation, DatasetVersion
from tests.conftest import PASSWORD
from tests.controlplane.datasets.sending import (
    GOOD,
    large_jsonl,
    run_operation,
    staged_files,
    text_rows,
    upload,
)

pytestmark = pytest.mark.django_db


def test_a_large_upload_is_staged_and_queued_on_the_control_queue_not_parsed_in_the_request(
    api_for, settings, staging, redis_url, django_capture_on_commit_callbacks
):
    import redis

    settings.DATASET_INLINE_MAX_BYTES = 1000
    broker = redis.Redis.from_url(redis_url)
    broker.delete("control")
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(api_for("alice"), large_jsonl())
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["status"], body["progress"], body["dataset_version"]) == ("queued", 0.0, None)
    assert len(staged_files(staging)) == 1 and not DatasetVersion.objects.exists()
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
    ingest_id = upload(api_for("alice"), large_jsonl()).json()["id"]
    # What the control worker runs; a redelivered message finds the ingest taken.
    assert dataset_operation_run(ingest_id) == "succeeded"
    assert dataset_operation_run(ingest_id) == "succeeded"
    body = api_for("alice").get(f"/api/v1/dataset-operations/{ingest_id}").json()
    assert body["progress"] == 1.0 and body["dataset_version"] is not None
    assert DatasetVersion.objects.get().row_count == 3000
    assert staged_files(staging) == []


def test_a_failed_ingest_keeps_its_report_and_stores_nothing(api_for, settings, staging):
    from controlplane.datasets.tasks import dataset_operation_run

    settings.DATASET_INLINE_MAX_BYTES = 1000
    ingest_id = upload(api_for("alice"), large_jsonl() + b'{"instruction": "x"}\n').json()["id"]
    assert dataset_operation_run(ingest_id) == "failed"
    body = api_for("alice").get(f"/api/v1/dataset-operations/{ingest_id}").json()
    assert body["report"]["examples"] == {"missing": ["line 3001: 'output' is missing"]}
    assert not Dataset.objects.exists() and staged_files(staging) == []


def test_dedup_makes_the_next_version_with_its_report_and_lineage(api_for, mlflow_server):
    texts = [f"sentence number {i} about nothing in particular" for i in range(40)]
    version = upload(api_for("alice"), text_rows(texts + texts[:5]), name="notes").json()["id"]
    done = run_operation(api_for("bob"), version, kind="dedup", threshold=0.9)
    assert (done["result"]["removed_exact"], done["result"]["kept"]) == (5, 40)
    deduped = DatasetVersion.objects.get(pk=done["dataset_version"])
    assert (deduped.version, deduped.parent_id, deduped.row_count) == (2, version, 40)
    detail = api_for("viv").get(f"/api/v1/datasets/{deduped.pk}").json()
    assert detail["parent"] == version and detail["derivation"]["removed_exact"] == 5
    # Dedup of rows with no duplicates is the same content: the same version, not a new one.
    again = run_operation(api_for("bob"), deduped.pk, kind="dedup")
    assert again["dataset_version"] == deduped.pk and DatasetVersion.objects.count() == 2


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"kind": "dedup", "threshold": 0.2}, 400, "threshold: Input should be greater than or equal to 0.5"),
        ({"kind": "dedup", "threshold": "x"}, 400, "threshold: Input should be a valid number"),
        ({"kind": "split", "train": 0.9, "validation": 0.9, "test": 0}, 400, "add up to 1"),
        ({"kind": "split", "train": 1, "seed": -1}, 400, "seed: Input should be greater than or equal to 0"),
        ({"kind": "split", "train": 1, "seed": "²"}, 400, "seed: must be a whole number"),
        ({"kind": "contamination", "train_version": 2**70}, 400, "train_version: Input should be less than"),
        ({"kind": "contamination", "train_version": 999_999}, 404, "Name a training version of this project"),
        ({"kind": "contamination"}, 400, "train_version: Field required"),
        ({"kind": "upload"}, 400, "'kind' is one of"),
    ],
)
def test_bad_operation_options_are_refused_and_start_nothing(api_for, mlflow_server, body, status, message):
    version = upload(api_for("alice"), GOOD).json()["id"]
    response = api_for("alice").post(f"/api/v1/datasets/{version}/operations", body, format="json")
    assert response.status_code == status and message in response.json()["message"]
    assert not DatasetOperation.objects.exclude(kind="upload").exists()


def test_a_viewer_cannot_start_an_operation_and_the_outsider_gets_404(api_for, mlflow_server, people):
    version = upload(api_for("alice"), GOOD).json()["id"]
    url = f"/api/v1/datasets/{version}/operations"
    assert api_for("viv").post(url, {"kind": "pii_scan"}, format="json").status_code == 403
    assert api_for("charlie").post(url, {"kind": "pii_scan"}, format="json").status_code == 404
    browser = Client()
    assert browser.login(username="charlie", password=PASSWORD)
    assert browser.post(f"/datasets/{version}/operations", {"kind": "pii_scan"}).status_code == 404
    # A training version from another project is not found either.
    other = upload(api_for("charlie"), GOOD, name="theirs")
    assert other.status_code == 404
    assert not DatasetOperation.objects.exclude(kind="upload").exists()


def test_the_reconciler_resends_lost_operations_and_fails_those_whose_worker_died(
    api_for, people, settings, staging, redis_url
):
    from datetime import timedelta

    import redis
    from django.utils import timezone

    from controlplane.datasets.services.operations import _finish, dataset_operations_reconcile

    settings.DATASET_INLINE_MAX_BYTES = 1000
    lost = DatasetOperation.objects.get(pk=upload(api_for("alice"), large_jsonl()).json()["id"])
    dead = DatasetOperation.objects.get(pk=upload(api_for("alice"), large_jsonl(), name="other").json()["id"])
    fresh = upload(api_for("alice"), large_jsonl(), name="fresh").json()["id"]
    long_ago = timezone.now() - timedelta(hours=1)
    DatasetOperation.objects.filter(pk=lost.pk).update(created_at=long_ago)
    DatasetOperation.objects.filter(pk=dead.pk).update(status="running", heartbeat_at=long_ago)
    broker = redis.Redis.from_url(redis_url)
    broker.delete("control")

    assert dataset_operations_reconcile() == {"resent": 1, "failed": 1}
    assert [json.loads(m)["headers"]["argsrepr"] for m in broker.lrange("control", 0, -1)] == [f"[{lost.pk}]"]
    dead.refresh_from_db()
    assert dead.status == "failed" and "start it again" in dead.message
    assert len(staged_files(staging)) == 2  # the lost one's and the fresh one's, not the dead one's
    # The dead worker, were it only slow, cannot finish it now.
    assert _finish(dead, status="succeeded").status == "failed"
    assert DatasetOperation.objects.get(pk=fresh).status == "queued"


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "dedup", "threshold": 10**400},
        {"kind": "dedup", "threshold": "1" * 400},
        {"kind": "split", "train": 10**400, "validation": 0, "test": 0},
    ],
)
def test_a_number_too_large_for_a_float_is_refused(api_for, mlflow_server, body):
    version = upload(api_for("alice"), GOOD).json()["id"]
    response = api_for("alice").post(f"/api/v1/datasets/{version}/operations", body, format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["message"].startswith(("threshold: ", "train: ")), response.json()["message"]


def test_an_operation_failing_on_an_unforeseen_error_is_marked_failed_not_left_running(
    api_for, mlflow_server
):
    from controlplane.datasets.tasks import dataset_operation_run

    train = upload(api_for("alice"), text_rows(["a b c d e f g h i j"]), name="train-set").json()["id"]
    evaluation = upload(api_for("alice"), text_rows(["k l m n o p q r s t"]), name="eval-set").json()["id"]
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
