"""Uploads sent in pieces: resumed from the server's offset, refused when bad, expired when abandoned."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.controlplane.datasets.sending import (
    GOOD,
    piece_send,
    staged_files,
    upload,
)

pytestmark = pytest.mark.django_db


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
    assert piece_send(alice, upload_id, 0, content[:50]).json()["offset"] == 50
    # A client that lost track sends from the wrong offset: refused, with the offset to send from.
    wrong = piece_send(alice, upload_id, 10, content[10:60])
    assert wrong.status_code == 409 and "send from offset 50" in wrong.json()["message"]
    assert wrong.headers.get("Upload-Offset") is None
    early = alice.post(f"/api/v1/uploads/{upload_id}/finish", {"name": "pieces"}, format="json")
    assert early.status_code == 409 and "50 of" in early.json()["message"]
    too_far = piece_send(alice, upload_id, 50, content[50:] + b"extra")
    assert too_far.status_code == 400 and "past the file's announced size" in too_far.json()["message"]
    # The server's offset, as a client asks for it after a broken connection.
    asked = alice.get(f"/api/v1/uploads/{upload_id}")
    assert asked.json()["offset"] == 50 and asked["Upload-Offset"] == "50"
    assert piece_send(alice, upload_id, 50, content[50:]).json()["offset"] == len(content)
    # Someone else cannot see, add to or finish it.
    for other in ("bob", "charlie"):
        assert api_for(other).get(f"/api/v1/uploads/{upload_id}").status_code == 404
        assert piece_send(api_for(other), upload_id, len(content), b"x").status_code == 404
    bad_name = alice.post(f"/api/v1/uploads/{upload_id}/finish", {"name": "a/b"}, format="json")
    assert bad_name.status_code == 400
    done = alice.post(f"/api/v1/uploads/{upload_id}/finish", {"name": "pieces"}, format="json")
    assert done.status_code == 201, done.content
    assert done.json()["row_count"] == 6 and done.json()["filename"] == "big.jsonl"
    # The same content sent in one piece is the same version.
    assert upload(api_for("bob"), content, name="pieces").json()["id"] == done.json()["id"]
    again = alice.post(f"/api/v1/uploads/{upload_id}/finish", {"name": "pieces"}, format="json")
    assert again.status_code == 409 and ChunkedUpload.objects.get().operation_id is not None
    assert piece_send(alice, upload_id, len(content), b"x").status_code == 409
    assert staged_files(staging) == []


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"filename": "d.jsonl", "size": 0}, 400, "size: Input should be greater than or equal to 1"),
        ({"filename": "d.jsonl", "size": "12.5"}, 400, "size: must be a whole number"),
        ({"filename": "d.jsonl", "size": True}, 400, "size: must be a whole number"),
        ({"filename": "d.jsonl", "size": 10**15}, 400, "the limit is"),
        ({"filename": "../..", "size": 10}, 400, "holds no name once its folders"),
        ({"filename": None, "size": 10}, 400, "filename: Input should be a valid string"),
        ({"project": "other", "filename": "d.jsonl", "size": 10}, 404, "Not found"),
    ],
)
def test_a_bad_resumable_upload_is_refused_and_stages_nothing(api_for, staging, body, status, message):
    from controlplane.datasets.models import ChunkedUpload

    response = api_for("alice").post("/api/v1/uploads", {"project": "demo", **body}, format="json")
    assert response.status_code == status and message in response.json()["message"], response.json()
    assert not ChunkedUpload.objects.exists() and staged_files(staging) == []


def test_a_piece_cut_short_is_kept_up_to_where_it_stopped_and_bad_pieces_change_nothing(
    api_for, people, settings
):
    import io

    from controlplane.datasets.services import uploads

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
    too_big = piece_send(alice, upload_id, 60, b"b" * 11)
    assert too_big.status_code == 400 and "at most 10 bytes" in too_big.json()["message"]
    assert alice.get(f"/api/v1/uploads/{upload_id}").json()["offset"] == 60
    assert alice.get("/api/v1/uploads/not-a-uuid").status_code == 404


def test_unfinished_uploads_nobody_adds_to_expire_with_their_bytes(api_for, settings, staging):
    from controlplane.datasets.models import ChunkedUpload
    from controlplane.datasets.services.uploads import uploads_expire

    alice = api_for("alice")
    upload_id = alice.post(
        "/api/v1/uploads", {"project": "demo", "filename": "d.jsonl", "size": 10}, format="json"
    ).json()["id"]
    assert uploads_expire() == 0 and len(staged_files(staging)) == 1
    settings.DATASET_UPLOAD_EXPIRE_SECONDS = 0
    assert uploads_expire() == 1
    assert not ChunkedUpload.objects.filter(pk=upload_id).exists() and staged_files(staging) == []
