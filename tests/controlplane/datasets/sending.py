"""Sending datasets to the API as a person would: a whole file, or an operation on a version."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.files.uploadedfile import SimpleUploadedFile


def upload(client, content: bytes, *, name: str = "chat-data", filename: str = "d.jsonl", **fields):
    return client.post(
        "/api/v1/datasets",
        {"project": "demo", "name": name, "file": SimpleUploadedFile(filename, content), **fields},
        format="multipart",
    )


def staged_files(staging: Path) -> list[Path]:
    return [p for p in staging.rglob("*") if p.is_file()] if staging.exists() else []


GOOD = b'{"instruction": "Say hi", "output": "hi"}\n{"instruction": "Add", "input": "1 2", "output": "3"}\n'


def large_jsonl(rows: int = 3000) -> bytes:
    return b"".join(
        json.dumps({"instruction": f"question {i}", "output": f"answer {i}"}).encode() + b"\n"
        for i in range(rows)
    )


def text_rows(texts: list[str]) -> bytes:
    return b"".join(json.dumps({"text": t}).encode() + b"\n" for t in texts)


def run_operation(client, version: int, **body) -> dict:
    from controlplane.datasets.tasks import dataset_operation_run

    started = client.post(f"/api/v1/datasets/{version}/operations", body, format="json")
    assert started.status_code == 202, started.content
    assert dataset_operation_run(started.json()["id"]) == "succeeded"
    return client.get(f"/api/v1/dataset-operations/{started.json()['id']}").json()


def piece_send(client, upload_id: str, offset: int, data: bytes):
    return client.generic(
        "PATCH", f"/api/v1/uploads/{upload_id}", data, content_type="application/offset+octet-stream",
        HTTP_UPLOAD_OFFSET=str(offset),
    )  # fmt: skip
