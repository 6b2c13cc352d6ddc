"""Uploads through the API: what is refused and why, what is stored, and how."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.test import Client

from controlplane.datasets.models import Dataset, DatasetOperation, DatasetVersion, OperationStatus
from tests.conftest import PASSWORD
from tests.controlplane.datasets.sending import (
    GOOD,
    run_operation,
    staged_files,
    upload,
)

pytestmark = pytest.mark.django_db


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
    ],
)
def test_a_bad_file_is_refused_naming_the_line_and_nothing_is_stored(api_for, staging, content, message):
    response = upload(api_for("alice"), content)
    assert response.status_code == 400, response.content
    assert message in response.json()["message"]
    assert not Dataset.objects.exists() and not DatasetVersion.objects.exists()
    assert DatasetOperation.objects.get().status == OperationStatus.FAILED
    assert staged_files(staging) == []


def test_every_bad_line_is_counted_and_the_first_ones_listed(api_for):
    content = b"".join(b"nope\n" for _ in range(30))
    body = upload(api_for("alice"), content).json()
    assert body["details"]["error_count"] == 30
    assert len(body["details"]["examples"]["syntax"]) == 20
    assert "(and 29 more)" in body["message"]


def test_a_bad_dataset_name_is_refused(api_for):
    response = upload(api_for("alice"), GOOD, name="../Bad Name")
    assert response.status_code == 400 and "dataset name" in response.json()["message"]


def test_a_missing_file_is_refused(api_for):
    response = api_for("alice").post("/api/v1/datasets", {"project": "demo", "name": "x"}, format="multipart")
    assert response.status_code == 400 and "'file'" in response.json()["message"]


@pytest.mark.parametrize("sent", ["../../etc/passwd", "..\\..\\passwd"])
def test_a_path_traversal_filename_never_leaves_the_staging_folder(api_for, staging, mlflow_server, sent):
    # Django's upload parser keeps only the last part of a sent name (the ingest refuses any
    # other path it is handed); the file is read under that name and nothing else is written.
    stored = upload(api_for("alice"), GOOD, filename=sent)
    assert stored.status_code == 201 and stored.json()["filename"] == "passwd"
    assert staged_files(staging) == []
    # Staging is a folder of tmp_path, so "../../etc/passwd" from one of its folders would land
    # in tmp_path; only the version's cached copy (under var/) may carry the name.
    outside = [p for p in staging.parent.rglob("*passwd*") if not p.is_relative_to(staging.parent / "var")]
    assert outside == []


def test_a_bad_mapping_or_schema_is_refused(api_for):
    assert "mapping" in upload(api_for("alice"), GOOD, mapping="[1]").json()["message"]
    assert (
        "schema: Input should be 'text'" in upload(api_for("alice"), GOOD, schema="poetry").json()["message"]
    )


def test_a_good_file_becomes_version_one_as_parquet_in_mlflow_and_the_same_content_is_not_stored_twice(
    api_for, mlflow_server, tmp_path
):
    import pyarrow.parquet as pq
    from mlflow.artifacts import download_artifacts

    first = upload(api_for("alice"), GOOD, filename="train.jsonl")
    assert first.status_code == 201, first.content
    body = first.json()
    assert first.headers["Location"] == f"/api/v1/datasets/{body['id']}"
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
    again = upload(api_for("bob"), same)
    assert again.status_code == 201 and again.json()["id"] == body["id"]
    as_csv = b"instruction,input,output\nSay hi,,hi\nAdd,1 2,3\n"
    assert upload(api_for("bob"), as_csv, filename="d.csv").json()["id"] == body["id"]

    changed = upload(api_for("bob"), GOOD + b'{"instruction": "new", "input": "", "output": "row"}\n')
    assert changed.json()["version"] == 2
    assert DatasetVersion.objects.count() == 2

    detail = api_for("viv").get(f"/api/v1/datasets/{body['id']}").json()
    assert detail["stats"]["row_count"] == 2 and detail["stats"]["fill_rates"]["input"] == 0.5


def test_a_byte_order_mark_is_accepted_and_does_not_change_the_content(api_for, mlflow_server, tmp_path):
    from workers.engine.data import read_training_rows
    from workers.spec import DatasetSchema

    plain = upload(api_for("alice"), GOOD)
    with_bom = upload(api_for("alice"), b"\xef\xbb\xbf" + GOOD)
    assert with_bom.status_code == 201, with_bom.content
    assert with_bom.json()["id"] == plain.json()["id"]
    # ... and the worker reads such a file the same way.
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD)
    assert [row.output for row in read_training_rows([path], DatasetSchema.INSTRUCTION)] == ["hi", "3"]


def test_a_column_mapping_and_a_named_schema_are_applied(api_for, mlflow_server):
    content = b"q,a\nSay hi,hi\n"
    response = upload(
        api_for("alice"), content, filename="d.csv", mapping='{"instruction": "q", "output": "a"}'
    )
    assert response.status_code == 201, response.content
    assert response.json()["format"] == "instruction"
    as_text = upload(api_for("alice"), b'{"text": "hello"}\n', name="notes", schema="text")
    assert as_text.json()["format"] == "text"


# --- large files: staged by the request, ingested by the control worker ---------------


def test_the_outsider_gets_404_from_the_rows_and_ingests_of_another_project(api_for, mlflow_server):
    version = upload(api_for("alice"), GOOD).json()["id"]
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


def test_token_lengths_are_measured_with_a_base_models_tokenizer_and_long_rows_refused(
    api_for, people, staging, tiny_model_uri
):
    from controlplane.datasets.tasks import dataset_operation_run
    from controlplane.training.models import BaseModel

    base = BaseModel.objects.create(project=people["demo"], name="tiny", uri=tiny_model_uri)
    measured = upload(api_for("alice"), GOOD, tokenizer=str(base.pk))
    # Loading a tokenizer is the control worker's job, even for a small file.
    assert measured.status_code == 202, measured.content
    assert measured.headers["Location"] == f"/api/v1/dataset-operations/{measured.json()['id']}"
    assert dataset_operation_run(measured.json()["id"]) == "succeeded", DatasetOperation.objects.get().message
    tokens = DatasetVersion.objects.get().stats["tokens"]
    assert tokens["sampled_rows"] == 2 and 0 < tokens["min"] <= tokens["max"] < 30

    long_row = GOOD + json.dumps({"instruction": "add " * 40, "output": "many"}).encode() + b"\n"
    limited = upload(api_for("alice"), long_row, name="limited", tokenizer=base.pk, max_tokens=30)
    assert dataset_operation_run(limited.json()["id"]) == "failed"
    report = DatasetOperation.objects.get(pk=limited.json()["id"]).report
    assert report["counts"] == {"too_long": 1}
    assert report["examples"]["too_long"][0].startswith("line 3: is ")
    assert report["examples"]["too_long"][0].endswith("tokens long; the limit is 30")

    elsewhere = BaseModel.objects.create(project=people["other"], name="theirs", uri=tiny_model_uri)
    refused = upload(api_for("alice"), GOOD, name="x", tokenizer=elsewhere.pk)
    assert refused.status_code == 404 and "'tokenizer'" in refused.json()["message"]
    assert upload(api_for("alice"), GOOD, name="y", max_tokens=5).status_code == 400
    too_big = upload(api_for("alice"), GOOD, name="z", tokenizer=str(2**70))
    assert too_big.status_code == 400 and "tokenizer: Input should be less than" in too_big.json()["message"]


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
    response = upload(api_for("alice"), GOOD, mapping=mapping)
    assert response.status_code == 400 and "mapping" in response.json()["message"]
    assert not DatasetOperation.objects.exists()


def test_a_long_multibyte_file_name_is_stored_shortened(api_for, mlflow_server):
    response = upload(api_for("alice"), GOOD, filename="数据" * 100 + ".jsonl")
    assert response.status_code == 201, response.content
    filename = response.json()["filename"]
    assert filename.startswith("数据") and filename.endswith(".jsonl") and len(filename.encode()) <= 200


def test_a_cached_copy_cut_short_is_dropped_and_fetched_again(api_for, mlflow_server, settings):
    version = upload(api_for("alice"), GOOD).json()["id"]
    assert api_for("alice").get(f"/api/v1/datasets/{version}/rows").status_code == 200
    cached = list((Path(settings.VAR_DIR) / "cache" / "datasets").rglob("*.parquet"))
    assert len(cached) == 1
    cached[0].write_bytes(cached[0].read_bytes()[:100])
    again = api_for("alice").get(f"/api/v1/datasets/{version}/rows")
    assert again.status_code == 200 and again.json()["rows"][0]["instruction"] == "Say hi"
    cached[0].write_bytes(cached[0].read_bytes()[:100])
    assert run_operation(api_for("alice"), version, kind="pii_scan")["status"] == "succeeded"


def test_a_cached_copy_whose_rows_are_damaged_is_dropped_with_a_503(api_for, mlflow_server, settings):
    version = upload(api_for("alice"), GOOD).json()["id"]
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
