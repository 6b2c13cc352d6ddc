from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from controlplane import tracking
from controlplane.accounts.models import Project, Role
from controlplane.accounts.selectors import project_role_check
from controlplane.datasets.ingest.pipeline import IngestOptions, IngestResult, ingest
from controlplane.datasets.ingest.problems import IngestRefused
from controlplane.datasets.ingest.schemas import Schema
from controlplane.datasets.ingest.sources import Limits, filename_check
from controlplane.datasets.models import Dataset, DatasetFormat, DatasetIngest, DatasetVersion, IngestStatus
from controlplane.errors import DomainError, ValidationFailed
from controlplane.naming import name_check


def _mapping_parse(mapping: Any) -> dict[str, str]:
    """A column mapping from a form field (JSON text) or a JSON body (an object)."""
    if mapping in (None, ""):
        return {}
    if isinstance(mapping, str):
        try:
            mapping = json.loads(mapping)
        except ValueError:
            raise ValidationFailed(
                'The mapping must be a JSON object like {"instruction": "question"}.'
            ) from None
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in mapping.items()
    ):
        raise ValidationFailed('The mapping must be a JSON object of field names, like {"output": "answer"}.')
    return mapping


def _stage(upload: UploadedFile, filename: str) -> Path:
    """Move the upload into the staging folder the control worker reads from; returns its path."""
    folder = Path(settings.DATASET_STAGING_DIR) / uuid.uuid4().hex
    folder.mkdir(parents=True)
    target = folder / filename
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
    user,
    name: str,
    upload: UploadedFile,
    schema: str = "",
    mapping: Any = None,
) -> DatasetIngest:
    """Stage an uploaded file and start its ingest.

    A small file is ingested at once, within this call; a larger one by the
    control worker, which this sends the ingest to once the row is committed.
    The web request never reads a large file's rows.
    """
    project_role_check(user=user, project=project, role=Role.MEMBER)
    name_check(name, what="dataset")
    if schema and schema not in DatasetFormat.values:
        raise ValidationFailed(f"Unknown schema {schema!r}; one of {', '.join(DatasetFormat.values)}.")
    mapping = _mapping_parse(mapping)
    try:
        filename = filename_check(upload.name or "")
    except IngestRefused as exc:
        raise ValidationFailed(exc.message) from exc
    if upload.size is not None and upload.size > settings.DATASET_MAX_UPLOAD_BYTES:
        raise ValidationFailed(
            f"The file is {upload.size} bytes; the limit is {settings.DATASET_MAX_UPLOAD_BYTES}."
        )
    staged = _stage(upload, filename)
    size = staged.stat().st_size
    ingest_row = DatasetIngest.objects.create(
        project=project,
        name=name,
        filename=filename,
        staged_path=str(staged),
        size_bytes=size,
        schema=schema,
        mapping=mapping,
        created_by=user,
    )
    if size <= settings.DATASET_INLINE_MAX_BYTES:
        return dataset_ingest_run(ingest_id=ingest_row.pk)
    transaction.on_commit(lambda: dataset_ingest_send(ingest_id=ingest_row.pk))
    return ingest_row


def dataset_ingest_send(*, ingest_id: int) -> None:
    from controlplane.celery import app

    app.send_task("datasets.ingest_run", args=[ingest_id], queue="control")


def _progress_set(ingest_id: int, fraction: float) -> None:
    DatasetIngest.objects.filter(pk=ingest_id, status=IngestStatus.RUNNING).update(progress=fraction)


def _finish(ingest_row: DatasetIngest, **fields: Any) -> DatasetIngest:
    fields.setdefault("finished_at", timezone.now())
    fields.setdefault("staged_path", "")
    DatasetIngest.objects.filter(pk=ingest_row.pk, status=IngestStatus.RUNNING).update(**fields)
    ingest_row.refresh_from_db()
    return ingest_row


def dataset_ingest_run(*, ingest_id: int) -> DatasetIngest:
    """Do the ingest: check every row, normalize to Parquet, store it and record the version.

    Safe to run twice: only the run that moves the row from queued to running
    does the work; a redelivered message finds it taken and returns.
    """
    claimed = DatasetIngest.objects.filter(pk=ingest_id, status=IngestStatus.QUEUED).update(
        status=IngestStatus.RUNNING, started_at=timezone.now()
    )
    ingest_row = DatasetIngest.objects.select_related("project", "created_by").get(pk=ingest_id)
    if not claimed:
        return ingest_row
    staged = Path(ingest_row.staged_path)
    try:
        with tempfile.TemporaryDirectory(prefix="tuneyard-ingest-") as tmp:
            try:
                result = ingest(
                    staged,
                    filename=ingest_row.filename,
                    output=Path(tmp) / "data.parquet",
                    workdir=Path(tmp),
                    options=IngestOptions(
                        schema=Schema(ingest_row.schema) if ingest_row.schema else None,
                        mapping=ingest_row.mapping or {},
                        limits=Limits(max_expansion_ratio=settings.DATASET_MAX_EXPANSION_RATIO),
                    ),
                    on_progress=lambda fraction: _progress_set(ingest_id, fraction),
                )
            except IngestRefused as exc:
                return _finish(ingest_row, status=IngestStatus.FAILED, message=exc.message, report=exc.report)
            try:
                version = _version_store(ingest_row, result)
            except DomainError as exc:
                return _finish(ingest_row, status=IngestStatus.FAILED, message=exc.message)
    finally:
        shutil.rmtree(staged.parent, ignore_errors=True)
    return _finish(ingest_row, status=IngestStatus.SUCCEEDED, progress=1.0, version=version)


def _version_store(ingest_row: DatasetIngest, result: IngestResult) -> DatasetVersion:
    """The version with this content: the existing one, or a new one stored in MLflow first."""
    project, name = ingest_row.project, ingest_row.name
    existing = DatasetVersion.objects.filter(
        dataset__project=project, dataset__name=name, sha256=result.sha256
    ).first()
    if existing is not None:
        return existing
    # Stored before the rows exist: a failed upload leaves no row pointing nowhere.
    uri = tracking.artifact_upload(
        result.parquet_path,
        experiment=f"tuneyard/{project.slug}/datasets",
        run_name=f"dataset-{name}",
        artifact_path="dataset",
        tags={"tuneyard.project": project.slug, "tuneyard.dataset": name, "tuneyard.sha256": result.sha256},
    )
    return dataset_version_record(
        project=project,
        user=ingest_row.created_by,
        name=name,
        result=result,
        uri=uri,
        filename=ingest_row.filename,
    )


def dataset_version_record(
    *, project: Project, user, name: str, result: IngestResult, uri: str, filename: str
) -> DatasetVersion:
    """The dataset's next version for content already stored at ``uri`` (or the same content's version)."""
    with transaction.atomic():
        dataset, _ = Dataset.objects.get_or_create(project=project, name=name)
        # Lock the dataset row so two uploads cannot take the same version number.
        Dataset.objects.select_for_update().filter(pk=dataset.pk).first()
        existing = dataset.versions.filter(sha256=result.sha256).first()
        if existing is not None:
            return existing
        latest = dataset.versions.aggregate(n=Max("version"))["n"] or 0
        return DatasetVersion.objects.create(
            dataset=dataset,
            version=latest + 1,
            format=result.schema.value,
            source_format=result.file_format,
            sha256=result.sha256,
            uri=uri,
            filename=filename,
            row_count=result.row_count,
            size_bytes=result.parquet_bytes,
            stats=result.stats,
            created_by=user,
        )


def dataset_version_create(
    *, project: Project, user, name: str, upload: UploadedFile, schema: str = "", mapping: Any = None
) -> DatasetVersion:
    """Ingest an upload within this call and return its version; a file with any bad row stores nothing.

    For callers that need the version now (the demo seed, small API uploads).
    """
    ingest_row = dataset_ingest_create(
        project=project, user=user, name=name, upload=upload, schema=schema, mapping=mapping
    )
    if not ingest_row.is_finished:
        raise ValidationFailed("The file is too large to ingest within a request; follow its ingest instead.")
    return dataset_ingest_version(ingest_row)


def dataset_ingest_version(ingest_row: DatasetIngest) -> DatasetVersion:
    """The version a finished ingest made, or its failure as a ValidationFailed with the report."""
    if ingest_row.status == IngestStatus.SUCCEEDED and ingest_row.version is not None:
        return ingest_row.version
    raise ValidationFailed(ingest_row.message or "The ingest failed.", details=ingest_row.report)
