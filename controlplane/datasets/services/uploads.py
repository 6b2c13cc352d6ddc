"""Resumable uploads: a large file goes up in pieces, and a broken connection resumes where it stopped.

The protocol is the core of tus (tus.io), over three calls: ``begin`` names
the file and its size; each ``append`` sends the bytes from the offset the
server holds (a piece sent from any other offset is refused with that offset,
so a client that lost track asks again and goes on); ``finish`` starts the
same ingest a one-piece upload starts. The bytes stream to the staging folder
as they arrive; no piece is held in memory whole.
"""

from __future__ import annotations

import shutil
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlplane.accounts.models import Project, Role, User
from controlplane.accounts.selectors import project_role_check
from controlplane.datasets.models import ChunkedUpload, DatasetOperation
from controlplane.datasets.services.ingest import (
    ingest_operation_create,
    ingest_options_check,
    ingest_runs_inline,
    upload_filename,
    upload_size_check,
)
from controlplane.datasets.services.operations import dataset_operation_run
from controlplane.errors import Conflict, NotFound, ValidationFailed

READ_BYTES = 1024 * 1024


def upload_begin(*, project: Project, user: User, filename: str, size: int) -> ChunkedUpload:
    """Open a resumable upload of ``size`` bytes; its file waits, empty, in the staging folder.

    The staged file is named by the upload's id; ``filename`` is only kept, normalized, to be shown.
    """
    project_role_check(user=user, project=project, role=Role.MEMBER)
    name = upload_filename(filename)
    upload_size_check(size)
    upload_id = uuid.uuid4()
    folder = Path(settings.DATASET_STAGING_DIR) / upload_id.hex
    folder.mkdir(parents=True)
    staged = folder / upload_id.hex
    staged.touch()
    return ChunkedUpload.objects.create(
        id=upload_id,
        project=project,
        created_by=user,
        filename=name,
        size_bytes=size,
        staged_path=str(staged),
    )


def upload_get(*, user: User, upload_id: uuid.UUID) -> ChunkedUpload:
    """An upload is its sender's: anyone else gets NotFound, as for what they cannot see."""
    upload = ChunkedUpload.objects.select_related("project").filter(pk=upload_id, created_by=user).first()
    if upload is None:
        raise NotFound("Not found.")
    project_role_check(user=user, project=upload.project, role=Role.MEMBER)
    return upload


def upload_append(
    *, user: User, upload_id: uuid.UUID, offset: int | None, length: int | None, stream: BinaryIO
) -> ChunkedUpload:
    """Append ``length`` bytes read from ``stream``, which the client sent from ``offset``.

    Under the upload's row lock, so two pieces sent at once cannot interleave.
    A piece cut short is kept up to where it stopped: the next one resumes there.
    """
    if offset is None or length is None or offset < 0 or length < 1:
        raise ValidationFailed(
            "Send the piece's first byte position as the Upload-Offset header and its bytes as the body."
        )
    if length > settings.DATASET_UPLOAD_PIECE_MAX_BYTES:
        raise ValidationFailed(
            f"A piece is at most {settings.DATASET_UPLOAD_PIECE_MAX_BYTES} bytes; this one is {length}."
        )
    with transaction.atomic():
        upload = upload_get(user=user, upload_id=upload_id)
        upload = ChunkedUpload.objects.select_for_update().get(pk=upload.pk)
        if upload.operation_id is not None:
            raise Conflict("This upload is finished; start a new one to send another file.")
        if offset != upload.received_bytes:
            raise Conflict(
                f"The server holds {upload.received_bytes} bytes of this upload; send from offset "
                f"{upload.received_bytes}."
            )
        if offset + length > upload.size_bytes:
            raise ValidationFailed(
                f"The piece ends at byte {offset + length}, "
                f"past the file's announced size {upload.size_bytes}."
            )
        written = _append(Path(upload.staged_path), offset, length, stream)
        upload.received_bytes = offset + written
        upload.save(update_fields=["received_bytes", "updated_at"])
    return upload


def _append(path: Path, offset: int, length: int, stream: BinaryIO) -> int:
    """Write at ``offset`` (dropping anything past it a broken piece left) up to ``length`` bytes."""
    written = 0
    with path.open("r+b") as out:
        out.truncate(offset)
        out.seek(offset)
        while written < length:
            data = stream.read(min(READ_BYTES, length - written))
            if not data:
                break  # the connection ended early: keep what came
            out.write(data)
            written += len(data)
    return written


def upload_finish(*, user: User, upload_id: uuid.UUID, **ingest: Any) -> DatasetOperation:
    """Ingest a complete upload; ``ingest``: name, schema, mapping, tokenizer, max_tokens."""
    upload = upload_get(user=user, upload_id=upload_id)
    options = ingest_options_check(project=upload.project, user=user, **ingest)
    with transaction.atomic():
        upload = ChunkedUpload.objects.select_for_update().get(pk=upload.pk)
        if upload.operation_id is not None:
            raise Conflict(f"This upload is already finished, as dataset operation {upload.operation_id}.")
        if upload.received_bytes != upload.size_bytes:
            raise Conflict(
                f"The server holds {upload.received_bytes} of {upload.size_bytes} bytes; "
                f"send the rest from offset {upload.received_bytes} first."
            )
        operation = ingest_operation_create(
            project=upload.project,
            user=user,
            staged=Path(upload.staged_path),
            filename=upload.filename,
            **options,
        )
        upload.operation = operation
        upload.save(update_fields=["operation", "updated_at"])
    if ingest_runs_inline(operation):
        return dataset_operation_run(operation_id=operation.pk)
    return operation


def uploads_expire() -> int:
    """Delete unfinished uploads nobody has added to for DATASET_UPLOAD_EXPIRE_SECONDS; how many."""
    idle = timezone.now() - timedelta(seconds=settings.DATASET_UPLOAD_EXPIRE_SECONDS)
    expired = ChunkedUpload.objects.filter(operation__isnull=True, updated_at__lt=idle)
    count = 0
    for upload in expired:
        shutil.rmtree(Path(upload.staged_path).parent, ignore_errors=True)
        upload.delete()
        count += 1
    return count
