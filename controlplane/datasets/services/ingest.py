"""Uploads: what an upload asks for (checked before any byte is staged), staging it, starting its ingest."""

from __future__ import annotations

import codecs
import shutil
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from controlplane.accounts.models import Project, Role, User
from controlplane.accounts.selectors import project_role_check
from controlplane.datasets.ingest.problems import IngestRefused, clipped
from controlplane.datasets.ingest.sources import filename_normalize, source_expands
from controlplane.datasets.models import DatasetOperation, DatasetVersion, OperationStatus
from controlplane.datasets.services.operations import dataset_operation_run, dataset_operation_send
from controlplane.datasets.tokenizers import tokenizer_ref
from controlplane.errors import ValidationFailed
from controlplane.naming import name_check
from workers.spec import DatasetSchema


def _stage(upload: UploadedFile) -> Path:
    """Move the upload into the staging folder the control worker reads from; returns its path.

    The staged file is named by a fresh id, never by the name its sender gave.
    """
    staged_id = uuid.uuid4().hex
    folder = Path(settings.DATASET_STAGING_DIR) / staged_id
    folder.mkdir(parents=True)
    target = folder / staged_id
    temporary = getattr(upload, "temporary_file_path", None)
    if temporary is not None:
        # Django already streamed the request body to a temporary file: a rename, not a copy.
        shutil.move(temporary(), target)
    else:
        upload.seek(0)
        with target.open("wb") as out:
            shutil.copyfileobj(upload, out, 1024 * 1024)
    return target


def dataset_ingest_create(
    *,
    project: Project,
    user: User,
    name: str,
    upload: UploadedFile,
    schema: DatasetSchema | None = None,
    mapping: dict[str, str] | None = None,
    tokenizer: int | None = None,
    max_tokens: int | None = None,
) -> DatasetOperation:
    """Stage an uploaded file and start its ingest.

    ``tokenizer`` names a base model of the project whose tokenizer measures
    the rows (token-length stats); ``max_tokens`` then refuses longer rows.

    A small file of plain text is ingested at once, within this call; a larger
    or compressed one by the control worker, which this sends the ingest to
    once the row is committed. The web request never reads a large file's
    rows, and never decompresses anything.
    """
    options = ingest_options_check(
        project=project, user=user, name=name, schema=schema, mapping=mapping, tokenizer=tokenizer,
        max_tokens=max_tokens,
    )  # fmt: skip
    filename = upload_filename(upload.name or "")
    upload_charset_check(upload.charset)
    upload_size_check(upload.size)
    return ingest_start(project=project, user=user, staged=_stage(upload), filename=filename, **options)


def upload_filename(name: str) -> str:
    """The name an upload is kept and shown under (see ``filename_normalize``)."""
    try:
        return filename_normalize(name)
    except IngestRefused as exc:
        raise ValidationFailed(exc.message) from exc


def upload_charset_check(charset: str | bytes | None) -> None:
    """Refuse a charset the file's content type declares, unless it is UTF-8 (or ASCII, a part of it).

    The ingest reads UTF-8 only: a file declared in another charset would be
    misread, and an unknown one says the sender does not know what they sent.
    """
    if not charset:
        return
    if isinstance(charset, bytes):
        # Django hands a file part's parameters on as the bytes the request held.
        charset = charset.decode("latin-1")
    try:
        codec = codecs.lookup(charset).name
    except (LookupError, ValueError):
        raise ValidationFailed(
            f"The file's content type declares the charset {clipped(charset, 40)!r}, which is unknown; "
            "send UTF-8 text, declared as 'charset=utf-8' or not at all."
        ) from None
    if codec not in ("utf-8", "utf-8-sig", "ascii"):
        raise ValidationFailed(
            f"The file's content type declares it as {codec} text; only UTF-8 is read: "
            "convert it to UTF-8 first."
        )


def ingest_options_check(
    *,
    project: Project,
    user: User,
    name: str,
    schema: DatasetSchema | None,
    mapping: dict[str, str] | None,
    tokenizer: int | None,
    max_tokens: int | None,
) -> dict[str, Any]:
    """Check what an upload asks for before any byte is staged; the options ``ingest_start`` takes."""
    project_role_check(user=user, project=project, role=Role.MEMBER)
    name_check(name, what="dataset")
    token_options: dict[str, Any] = {}
    if tokenizer is not None:
        # Resolved now, so the control worker loads from what the upload named, whatever comes later.
        ref = tokenizer_ref(project=project, base_model_id=tokenizer)
        token_options = {"tokenizer": ref.base_model_id, "tokenizer_name": ref.name, "tokenizer_uri": ref.uri}
        if max_tokens is not None:
            token_options["max_tokens"] = max_tokens
    return {
        "name": name,
        "schema": schema.value if schema else "",
        "mapping": mapping or {},
        "token_options": token_options,
    }


def upload_size_check(size: int | None) -> None:
    if size is not None and size > settings.DATASET_MAX_UPLOAD_BYTES:
        raise ValidationFailed(f"The file is {size} bytes; the limit is {settings.DATASET_MAX_UPLOAD_BYTES}.")


def ingest_start(
    *,
    project: Project,
    user: User,
    staged: Path,
    filename: str,
    name: str,
    schema: str,
    mapping: dict[str, str],
    token_options: dict[str, Any],
) -> DatasetOperation:
    """Start the ingest of a staged file: at once if it is small, else on the control worker."""
    operation = ingest_operation_create(
        project=project, user=user, staged=staged, filename=filename, name=name, schema=schema,
        mapping=mapping, token_options=token_options,
    )  # fmt: skip
    if ingest_runs_inline(operation):
        return dataset_operation_run(operation_id=operation.pk)
    return operation


def ingest_operation_create(
    *,
    project: Project,
    user: User,
    staged: Path,
    filename: str,
    name: str,
    schema: str,
    mapping: dict[str, str],
    token_options: dict[str, Any],
) -> DatasetOperation:
    """The ingest's row; a large file is sent to the control worker once the row is committed.

    ``filename`` is the name the file was uploaded as, made by ``upload_filename``.
    """
    operation = DatasetOperation.objects.create(
        project=project,
        name=name,
        filename=filename,
        staged_path=str(staged),
        size_bytes=staged.stat().st_size,
        schema=schema,
        mapping=mapping,
        options=token_options,
        created_by=user,
    )
    if not ingest_runs_inline(operation):
        transaction.on_commit(lambda: dataset_operation_send(operation_id=operation.pk))
    return operation


def ingest_runs_inline(operation: DatasetOperation) -> bool:
    """A small file of plain text is ingested within the request.

    Never one that counts tokens (a tokenizer takes seconds to load), nor one
    that must be decompressed or unpacked, however small: a few kilobytes of
    it can expand to gigabytes, and only the control worker reads those.
    """
    return (
        operation.size_bytes <= settings.DATASET_INLINE_MAX_BYTES
        and not operation.options
        and not source_expands(Path(operation.staged_path), operation.filename)
    )


def dataset_version_create(
    *,
    project: Project,
    user: User,
    name: str,
    upload: UploadedFile,
    schema: DatasetSchema | None = None,
    mapping: dict[str, str] | None = None,
) -> DatasetVersion:
    """Ingest an upload within this call and return its version; a file with any bad row stores nothing.

    For callers that need the version now (the demo seed, small API uploads).
    """
    operation = dataset_ingest_create(
        project=project, user=user, name=name, upload=upload, schema=schema, mapping=mapping
    )
    if not operation.is_finished:
        raise ValidationFailed(
            "The file is too large or compressed, so it is not ingested within a request; "
            "follow its ingest instead."
        )
    return dataset_operation_version(operation)


def dataset_operation_version(operation: DatasetOperation) -> DatasetVersion:
    """The version a finished ingest made, or its failure as a ValidationFailed with the report."""
    if operation.status == OperationStatus.SUCCEEDED and operation.version is not None:
        return operation.version
    raise ValidationFailed(operation.message or "The ingest failed.", details=operation.report)
