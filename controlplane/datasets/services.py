from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import uuid
from datetime import timedelta
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
from controlplane.datasets.ingest import curation
from controlplane.datasets.ingest.pipeline import IngestOptions, IngestResult, ingest
from controlplane.datasets.ingest.problems import IngestRefused
from controlplane.datasets.ingest.schemas import Schema
from controlplane.datasets.ingest.sources import Limits, filename_check
from controlplane.datasets.ingest.stats import TokenCounter
from controlplane.datasets.models import (
    Dataset,
    DatasetFormat,
    DatasetOperation,
    DatasetVersion,
    OperationKind,
    OperationStatus,
)
from controlplane.datasets.preview import version_parquet_path
from controlplane.errors import DomainError, NotFound, ValidationFailed
from controlplane.naming import name_check

logger = logging.getLogger(__name__)

# Mapping entries are column names: short, and free of the NUL byte PostgreSQL cannot store.
MAX_MAPPING_NAME_CHARS = 200


def _mapping_parse(mapping: Any) -> dict[str, str]:
    """A column mapping from a form field (JSON text) or a JSON body (an object)."""
    if mapping in (None, ""):
        return {}
    if isinstance(mapping, str):
        try:
            mapping = json.loads(mapping)
        except (ValueError, RecursionError):
            raise ValidationFailed(
                'The mapping must be a JSON object like {"instruction": "question"}.'
            ) from None
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in mapping.items()
    ):
        raise ValidationFailed('The mapping must be a JSON object of field names, like {"output": "answer"}.')
    for name in (*mapping.keys(), *mapping.values()):
        if "\x00" in name or len(name) > MAX_MAPPING_NAME_CHARS:
            raise ValidationFailed(
                f"The mapping names {name[:40]!r}, which is no column name "
                f"(at most {MAX_MAPPING_NAME_CHARS} characters, no NUL byte)."
            )
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
    tokenizer: Any = None,
    max_tokens: Any = None,
) -> DatasetOperation:
    """Stage an uploaded file and start its ingest.

    ``tokenizer`` names a base model of the project whose tokenizer measures
    the rows (token-length stats); ``max_tokens`` then refuses longer rows.

    A small file is ingested at once, within this call; a larger one by the
    control worker, which this sends the ingest to once the row is committed.
    The web request never reads a large file's rows.
    """
    options = ingest_options_check(
        project=project, user=user, name=name, schema=schema, mapping=mapping, tokenizer=tokenizer,
        max_tokens=max_tokens,
    )  # fmt: skip
    try:
        filename = filename_check(upload.name or "")
    except IngestRefused as exc:
        raise ValidationFailed(exc.message) from exc
    upload_size_check(upload.size)
    return ingest_start(project=project, user=user, staged=_stage(upload, filename), **options)


def ingest_options_check(
    *, project: Project, user, name: str, schema: str, mapping: Any, tokenizer: Any, max_tokens: Any
) -> dict[str, Any]:
    """Check what an upload asks for before any byte is staged; the options ``ingest_start`` takes."""
    project_role_check(user=user, project=project, role=Role.MEMBER)
    name_check(name, what="dataset")
    if schema and schema not in DatasetFormat.values:
        raise ValidationFailed(f"Unknown schema {schema!r}; one of {', '.join(DatasetFormat.values)}.")
    return {
        "name": name,
        "schema": schema,
        "mapping": _mapping_parse(mapping),
        "token_options": _token_options_check(project=project, tokenizer=tokenizer, max_tokens=max_tokens),
    }


def upload_size_check(size: int | None) -> None:
    if size is not None and size > settings.DATASET_MAX_UPLOAD_BYTES:
        raise ValidationFailed(f"The file is {size} bytes; the limit is {settings.DATASET_MAX_UPLOAD_BYTES}.")


def ingest_start(
    *, project: Project, user, staged: Path, name: str, schema: str, mapping: dict, token_options: dict
) -> DatasetOperation:
    """Start the ingest of a staged file: at once if it is small, else on the control worker."""
    operation = ingest_operation_create(
        project=project, user=user, staged=staged, name=name, schema=schema, mapping=mapping,
        token_options=token_options,
    )  # fmt: skip
    if ingest_runs_inline(operation):
        return dataset_operation_run(operation_id=operation.pk)
    return operation


def ingest_operation_create(
    *, project: Project, user, staged: Path, name: str, schema: str, mapping: dict, token_options: dict
) -> DatasetOperation:
    """The ingest's row; a large file is sent to the control worker once the row is committed."""
    operation = DatasetOperation.objects.create(
        project=project,
        name=name,
        filename=staged.name,
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
    """A small file is ingested within the request; a tokenizer takes seconds to load, so never then."""
    return operation.size_bytes <= settings.DATASET_INLINE_MAX_BYTES and not operation.options


def _whole_number(value: Any) -> int | None:
    """A whole number from a JSON number or form text, within what a database column holds; else None."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        return None
    return value


def _token_options_check(*, project: Project, tokenizer: Any, max_tokens: Any) -> dict[str, int]:
    from controlplane.training.models import BaseModel

    options: dict[str, int] = {}
    if tokenizer not in (None, ""):
        base_id = _whole_number(tokenizer)
        if base_id is None or not BaseModel.objects.filter(pk=base_id, project=project).exists():
            raise NotFound("'tokenizer' names no base model of this project.")
        options["tokenizer"] = base_id
    if max_tokens not in (None, ""):
        limit = _whole_number(max_tokens)
        if limit is None or not 1 <= limit <= 10_000_000:
            raise ValidationFailed("'max_tokens' is a whole number of tokens from 1 to 10000000.")
        if "tokenizer" not in options:
            raise ValidationFailed("'max_tokens' needs a 'tokenizer' (a base model) to count tokens with.")
        options["max_tokens"] = limit
    return options


def _token_counter(operation: DatasetOperation, tmp: Path) -> TokenCounter | None:
    """Counts tokens with the tokenizer of the base model the upload named, if it named one."""
    from controlplane.training.models import BaseModel

    base_id = operation.options.get("tokenizer")
    if base_id is None:
        return None
    base = BaseModel.objects.filter(pk=base_id, project=operation.project).first()
    if base is None:
        raise NotFound("The base model named as the tokenizer is gone.")
    source = base.uri
    if source.startswith("runs:/"):
        source = str(tracking.tokenizer_download(source, dst=tmp / "tokenizer"))
    from transformers import AutoTokenizer

    try:
        # Never the repository's own code here, even where a site admin allows it
        # on the workers: the control plane holds every project's credentials.
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ValidationFailed(
            f"The tokenizer of base model {base.name!r} could not be loaded: {exc}"
        ) from exc

    def count(texts):  # type: ignore[no-untyped-def]
        return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    return count


def dataset_operation_send(*, operation_id: int) -> None:
    from controlplane.celery import app

    app.send_task("datasets.operation_run", args=[operation_id], queue="control")


def _progress_set(operation_id: int, fraction: float) -> None:
    DatasetOperation.objects.filter(pk=operation_id, status=OperationStatus.RUNNING).update(
        progress=fraction, heartbeat_at=timezone.now()
    )


def _finish(operation: DatasetOperation, **fields: Any) -> DatasetOperation:
    fields.setdefault("finished_at", timezone.now())
    fields.setdefault("staged_path", "")
    DatasetOperation.objects.filter(pk=operation.pk, status=OperationStatus.RUNNING).update(**fields)
    operation.refresh_from_db()
    return operation


def dataset_operation_run(*, operation_id: int) -> DatasetOperation:
    """Do the operation's work and record its outcome; what the control worker runs.

    Safe to run twice: only the run that moves the row from queued to running
    does the work; a redelivered message finds it taken and returns.
    """
    now = timezone.now()
    claimed = DatasetOperation.objects.filter(pk=operation_id, status=OperationStatus.QUEUED).update(
        status=OperationStatus.RUNNING, started_at=now, heartbeat_at=now
    )
    operation = DatasetOperation.objects.select_related(
        "project", "created_by", "source_version__dataset"
    ).get(pk=operation_id)
    if not claimed:
        return operation
    runner = {
        OperationKind.UPLOAD: _upload_run,
        OperationKind.DEDUP: _dedup_run,
        OperationKind.SPLIT: _split_run,
        OperationKind.CONTAMINATION: _contamination_run,
        OperationKind.PII_SCAN: _pii_run,
    }[OperationKind(operation.kind)]
    staged = operation.staged_path
    try:
        with tempfile.TemporaryDirectory(prefix="tuneyard-dataset-") as tmp:
            fields = runner(operation, Path(tmp))
    except IngestRefused as exc:
        return _finish(operation, status=OperationStatus.FAILED, message=exc.message, report=exc.report)
    except DomainError as exc:
        return _finish(operation, status=OperationStatus.FAILED, message=exc.message)
    except Exception:
        # A bug must not leave the operation "running" until the reconciler gives up on it,
        # nor turn an upload into a server error: it is logged and the operation fails.
        logger.exception("dataset operation %s failed", operation.pk)
        return _finish(
            operation,
            status=OperationStatus.FAILED,
            message="The operation failed on an unexpected error; it was logged for the operators.",
        )
    finally:
        if staged:
            shutil.rmtree(Path(staged).parent, ignore_errors=True)
    return _finish(operation, status=OperationStatus.SUCCEEDED, progress=1.0, **fields)


def dataset_operations_reconcile() -> dict[str, int]:
    """Resend queued operations whose message was lost; fail running ones whose worker died.

    A resent message is harmless: only one run claims the operation. A failed
    one is final: if its old worker was only slow, its own finish is then a
    no-op, because finishing needs the operation still running.
    """
    now = timezone.now()
    queued_cutoff = now - timedelta(seconds=settings.DATASET_OPERATION_REDISPATCH_SECONDS)
    resent = 0
    for operation_id in DatasetOperation.objects.filter(
        status=OperationStatus.QUEUED, created_at__lt=queued_cutoff
    ).values_list("pk", flat=True):
        dataset_operation_send(operation_id=operation_id)
        resent += 1
    silent_cutoff = now - timedelta(seconds=settings.DATASET_OPERATION_SILENT_SECONDS)
    failed = 0
    for operation in DatasetOperation.objects.filter(
        status=OperationStatus.RUNNING, heartbeat_at__lt=silent_cutoff
    ):
        won = DatasetOperation.objects.filter(
            pk=operation.pk, status=OperationStatus.RUNNING, heartbeat_at__lt=silent_cutoff
        ).update(
            status=OperationStatus.FAILED,
            finished_at=now,
            staged_path="",
            message="The control worker stopped while working on this; start it again.",
        )
        if won and operation.staged_path:
            shutil.rmtree(Path(operation.staged_path).parent, ignore_errors=True)
        failed += won
    return {"resent": resent, "failed": failed}


def _progress(operation: DatasetOperation):  # type: ignore[no-untyped-def]
    return lambda fraction: _progress_set(operation.pk, fraction)


def _upload_run(operation: DatasetOperation, tmp: Path) -> dict[str, Any]:
    result = ingest(
        Path(operation.staged_path),
        filename=operation.filename,
        output=tmp / "data.parquet",
        workdir=tmp,
        options=IngestOptions(
            schema=Schema(operation.schema) if operation.schema else None,
            mapping=operation.mapping or {},
            token_counter=_token_counter(operation, tmp),
            max_tokens=operation.options.get("max_tokens"),
            limits=Limits(max_expansion_ratio=settings.DATASET_MAX_EXPANSION_RATIO),
        ),
        on_progress=_progress(operation),
    )
    version = _version_store(
        project=operation.project,
        user=operation.created_by,
        name=operation.name,
        result=result,
        filename=operation.filename,
    )
    return {"version": version}


def _dedup_run(operation: DatasetOperation, tmp: Path) -> dict[str, Any]:
    source = operation.source_version
    assert source is not None
    threshold = float(operation.options["threshold"])
    outcome = curation.dedup(
        version_parquet_path(source),
        tmp / "data.parquet",
        schema=Schema(source.format),
        threshold=threshold,
        on_progress=_progress(operation),
    )
    summary = {
        "kind": "dedup",
        "threshold": threshold,
        "removed_exact": outcome.removed_exact,
        "removed_near": outcome.removed_near,
        "kept": outcome.kept.row_count,
        "rows_per_second": outcome.rows_per_second,
        "examples": outcome.examples,
    }
    version = _version_store(
        project=operation.project,
        user=operation.created_by,
        name=source.dataset.name,
        result=outcome.kept,
        filename=source.filename,
        parent=source,
        derivation=summary,
    )
    return {"version": version, "result": summary}


def _split_run(operation: DatasetOperation, tmp: Path) -> dict[str, Any]:
    source = operation.source_version
    assert source is not None
    fractions, seed = operation.options["fractions"], int(operation.options["seed"])
    parts = curation.split(
        version_parquet_path(source),
        {name: tmp / f"{name}.parquet" for name in fractions},
        schema=Schema(source.format),
        fractions=fractions,
        seed=seed,
        on_progress=_progress(operation),
    )
    made = {}
    for part, result in parts.items():
        if not result.row_count:
            continue  # a part too small to hold a row makes no version
        version = _version_store(
            project=operation.project,
            user=operation.created_by,
            name=f"{source.dataset.name[:88]}-{part}",
            result=result,
            filename=source.filename,
            parent=source,
            derivation={"kind": "split", "part": part, "fractions": fractions, "seed": seed},
        )
        made[part] = {"version": version.pk, "rows": version.row_count, "name": str(version)}
    return {"result": {"kind": "split", "seed": seed, "parts": made}}


def _contamination_run(operation: DatasetOperation, tmp: Path) -> dict[str, Any]:
    source = operation.source_version
    assert source is not None
    train = DatasetVersion.objects.get(pk=operation.options["train_version"])
    found = curation.contamination(
        version_parquet_path(source),
        version_parquet_path(train),
        eval_schema=Schema(source.format),
        train_schema=Schema(train.format),
        n=int(operation.options.get("n", 8)),
        on_progress=_progress(operation),
    )
    return {"result": {"kind": "contamination", "train_version": train.pk, "train": str(train), **found}}


def _pii_run(operation: DatasetOperation, tmp: Path) -> dict[str, Any]:
    source = operation.source_version
    assert source is not None
    found = curation.pii_scan(
        version_parquet_path(source), schema=Schema(source.format), on_progress=_progress(operation)
    )
    return {"result": {"kind": "pii_scan", **found}}


def _version_store(
    *,
    project: Project,
    user,
    name: str,
    result: IngestResult,
    filename: str,
    parent: DatasetVersion | None = None,
    derivation: dict[str, Any] | None = None,
) -> DatasetVersion:
    """The version with this content: the existing one, or a new one stored in MLflow first."""
    existing = DatasetVersion.objects.filter(
        dataset__project=project, dataset__name=name, sha256=result.sha256
    ).first()
    if existing is not None:
        return existing
    # Stored before the rows exist: a failure leaves no row pointing nowhere.
    uri = tracking.artifact_upload(
        result.parquet_path,
        experiment=f"tuneyard/{project.slug}/datasets",
        run_name=f"dataset-{name}",
        artifact_path="dataset",
        tags={"tuneyard.project": project.slug, "tuneyard.dataset": name, "tuneyard.sha256": result.sha256},
    )
    return dataset_version_record(
        project=project,
        user=user,
        name=name,
        result=result,
        uri=uri,
        filename=filename,
        parent=parent,
        derivation=derivation,
    )


def dataset_version_record(
    *,
    project: Project,
    user,
    name: str,
    result: IngestResult,
    uri: str,
    filename: str,
    parent: DatasetVersion | None = None,
    derivation: dict[str, Any] | None = None,
) -> DatasetVersion:
    """The dataset's next version for content already stored at ``uri`` (or the same content's version)."""
    with transaction.atomic():
        dataset, _ = Dataset.objects.get_or_create(project=project, name=name)
        # Lock the dataset row so two writers cannot take the same version number.
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
            parent=parent,
            derivation=derivation or {},
            created_by=user,
        )


# --- operations on a stored version ------------------------------------------------------

SPLIT_PARTS = ("train", "validation", "test")


def _options_check(
    *, kind: OperationKind, version: DatasetVersion, options: dict[str, Any]
) -> dict[str, Any]:
    """The options a kind needs, checked and in their stored form."""
    if kind is OperationKind.DEDUP:
        threshold = _number(options.get("threshold", 0.8), "threshold")
        if not 0.5 <= threshold <= 1.0:
            raise ValidationFailed("'threshold' is a similarity from 0.5 to 1.0 (0.8 is usual).")
        return {"threshold": threshold}
    if kind is OperationKind.SPLIT:
        fractions = {part: _number(options.get(part, 0), part) for part in SPLIT_PARTS}
        if any(not 0 <= f <= 1 for f in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-6:
            raise ValidationFailed(
                "'train', 'validation' and 'test' are fractions from 0 to 1 that add up to 1."
            )
        seed = _whole_number(options.get("seed", 42))
        if seed is None or not 0 <= seed < 2**32:
            raise ValidationFailed("'seed' is a whole number from 0 to 4294967295.")
        return {"fractions": {p: f for p, f in fractions.items() if f > 0}, "seed": seed}
    if kind is OperationKind.CONTAMINATION:
        train_id = _whole_number(options.get("train_version"))
        train = (
            DatasetVersion.objects.filter(pk=train_id, dataset__project=version.dataset.project).first()
            if train_id is not None
            else None
        )
        if train is None:
            raise NotFound("Name the training version to check against ('train_version', in this project).")
        if train.pk == version.pk:
            raise ValidationFailed("Check an eval version against another version, not itself.")
        return {"train_version": train.pk, "n": 8}
    return {}


def _number(value: Any, name: str) -> float:
    # A JSON body may hold an integer of any length, which float() refuses with OverflowError;
    # text is bounded so that float() is never handed megabytes.
    if isinstance(value, str) and len(value) > 64:
        raise ValidationFailed(f"'{name}' must be a number.")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValidationFailed(f"'{name}' must be a number.") from None
    if not math.isfinite(number):
        raise ValidationFailed(f"'{name}' must be a number.")
    return number


def dataset_operation_start(
    *, version: DatasetVersion, user, kind: str, options: dict[str, Any]
) -> DatasetOperation:
    """Queue dedup, a split, a contamination check or a PII scan of a stored version."""
    project_role_check(user=user, project=version.dataset.project, role=Role.MEMBER)
    if kind not in OperationKind.values or kind == OperationKind.UPLOAD:
        raise ValidationFailed("'kind' is one of dedup, split, contamination, pii_scan.")
    if not version.uri.endswith(".parquet"):
        raise ValidationFailed("This version was stored before Parquet; upload it again to work on it.")
    checked = _options_check(kind=OperationKind(kind), version=version, options=options)
    with transaction.atomic():
        operation = DatasetOperation.objects.create(
            project=version.dataset.project,
            kind=kind,
            name=version.dataset.name,
            source_version=version,
            options=checked,
            created_by=user,
        )
        transaction.on_commit(lambda: dataset_operation_send(operation_id=operation.pk))
    return operation


def dataset_version_create(
    *, project: Project, user, name: str, upload: UploadedFile, schema: str = "", mapping: Any = None
) -> DatasetVersion:
    """Ingest an upload within this call and return its version; a file with any bad row stores nothing.

    For callers that need the version now (the demo seed, small API uploads).
    """
    operation = dataset_ingest_create(
        project=project, user=user, name=name, upload=upload, schema=schema, mapping=mapping
    )
    if not operation.is_finished:
        raise ValidationFailed("The file is too large to ingest within a request; follow its ingest instead.")
    return dataset_operation_version(operation)


def dataset_operation_version(operation: DatasetOperation) -> DatasetVersion:
    """The version a finished ingest made, or its failure as a ValidationFailed with the report."""
    if operation.status == OperationStatus.SUCCEEDED and operation.version is not None:
        return operation.version
    raise ValidationFailed(operation.message or "The ingest failed.", details=operation.report)
