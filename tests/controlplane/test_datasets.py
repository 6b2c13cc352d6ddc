from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from controlplane.datasets.models import Dataset, DatasetVersion

pytestmark = pytest.mark.django_db


def _upload(client, content: bytes, *, name: str = "chat-data", filename: str = "d.jsonl"):
    return client.post(
        "/api/v1/datasets",
        {"project": "demo", "name": name, "file": SimpleUploadedFile(filename, content)},
        format="multipart",
    )


GOOD = b'{"instruction": "Say hi", "output": "hi"}\n{"instruction": "Add", "input": "1 2", "output": "3"}\n'


@pytest.mark.parametrize(
    "content, message",
    [
        (GOOD + b"{not json\n", "line 3: is not valid JSON"),
        (GOOD + b'{"instruction": "x"}\n', "line 3: 'output' is missing"),
        (
            b'{"instruction": "", "output": "y"}\n',
            "line 1: 'instruction' string should have at least 1 character",
        ),
        (
            b'{"instruction": "   ", "output": "y"}\n',
            "line 1: 'instruction' value error, must not be blank",
        ),
        (
            b'{"instruction": 5, "output": "y"}\n',
            "line 1: 'instruction' input should be a valid string",
        ),
        (b'["a list"]\n', "line 1: must be a JSON object"),
        (
            b'{"instruction": "x", "output": "y", "extra": 1}\n',
            "line 1: 'extra' extra inputs are not permitted",
        ),
        (b'{"instruction": "\xff\xfe", "output": "y"}\n', "line 1: is not UTF-8 text"),
        (b"\n\n", "The file has no rows"),
    ],
)
def test_a_bad_file_is_refused_naming_the_line_and_nothing_is_stored(api_for, content, message):
    response = _upload(api_for("alice"), content)
    assert response.status_code == 400, response.content
    assert message in response.json()["message"]
    assert not Dataset.objects.exists() and not DatasetVersion.objects.exists()


def test_every_bad_line_is_counted_and_the_first_ones_listed(api_for):
    content = b"".join(b"nope\n" for _ in range(30))
    body = _upload(api_for("alice"), content).json()
    assert body["details"]["error_count"] == 30
    assert len(body["details"]["errors"]) == 20
    assert "(and 10 more)" in body["message"]


def test_a_bad_dataset_name_is_refused(api_for):
    response = _upload(api_for("alice"), GOOD, name="../Bad Name")
    assert response.status_code == 400 and "dataset name" in response.json()["message"]


def test_a_missing_file_is_refused(api_for):
    response = api_for("alice").post("/api/v1/datasets", {"project": "demo", "name": "x"}, format="multipart")
    assert response.status_code == 400 and "'file'" in response.json()["message"]


def test_a_good_file_becomes_version_one_in_mlflow_and_the_same_content_is_not_stored_twice(
    api_for, mlflow_server, tmp_path
):
    from mlflow.artifacts import download_artifacts

    first = _upload(api_for("alice"), GOOD, filename="../../etc/passwd")
    assert first.status_code == 201, first.content
    body = first.json()
    assert (body["version"], body["row_count"]) == (1, 2)
    # The path-traversal filename was reduced to its last component.
    assert body["filename"] == "passwd" and "/etc/" not in body["uri"]
    local = download_artifacts(artifact_uri=body["uri"], dst_path=str(tmp_path), tracking_uri=mlflow_server)
    assert open(local, "rb").read() == GOOD

    # The same rows with other key order and spacing are the same content.
    rows = [json.loads(line) for line in GOOD.splitlines()]
    same = b"".join(json.dumps(dict(reversed(list(r.items()))), indent=None).encode() + b"\n\n" for r in rows)
    again = _upload(api_for("bob"), same)
    assert again.status_code == 201 and again.json()["id"] == body["id"]

    changed = _upload(api_for("bob"), GOOD + b'{"instruction": "new", "output": "row"}\n')
    assert changed.json()["version"] == 2
    assert DatasetVersion.objects.count() == 2


def test_a_byte_order_mark_is_accepted_and_does_not_change_the_content(api_for, mlflow_server, tmp_path):
    from workers.engine.data import read_instruction_rows

    plain = _upload(api_for("alice"), GOOD)
    with_bom = _upload(api_for("alice"), b"\xef\xbb\xbf" + GOOD)
    assert with_bom.status_code == 201, with_bom.content
    assert with_bom.json()["id"] == plain.json()["id"]
    # ... and the worker reads such a file the same way.
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD)
    assert [row.output for row in read_instruction_rows([path])] == ["hi", "3"]
