"""Operations on datasets, run by the control worker: an upload's ingest, dedup, splits, contamination
checks and PII scans; starting them, running them once, and resending or failing lost ones."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlplane.accounts.models import Role, User
from controlplane.accounts.selectors import project_role_check
from controlplane.celery import app
from controlplane.datasets.ingest import curation
from controlplane.datasets.ingest.pipeline import IngestOptions, ProgressCallback, ingest
from controlplane.datasets.ingest.problems import IngestRefused
from controlplane.datasets.ingest.sources import Limits
from controlplane.datasets.ingest.stats import TokenCounter
from controlplane.datasets.inputs import ContaminationRequest, DedupRequest, OperationOptions, SplitRequest
from controlplane.datasets.models import DatasetOperation, DatasetVersion, OperationKind, OperationStatus
from controlplane.datasets.preview import version_parquet_path
from controlplane.datasets.services.versions import dataset_version_store
from controlplane.datasets.tokenizers import tokenizer_load
from controlplane.errors import DomainError, NotFound, ValidationFailed
from workers.spec import DatasetSchema

logger = logging.getLogger(__name__)


def _token_counter(operation: DatasetOperation, tmp: Path) -> TokenCounter | None:
    """Counts tokens with the tokenizer the upload named (resolved and stored when asked), if any."""
    if operation.options.get("tokenizer") is None:
        return None
    source, name = operation.options.get("tokenizer_uri"), operation.options.get("tokenizer_name", "")
    if not source:
        raise ValidationFailed("This upload was queued before an upgrade changed its options; upload again.")
    tokenizer = tokenizer_load(project=operation.project, name=name, uri=source, dst=tmp / "tokenizer")

    def count(texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    return count


def dataset_operation_send(*, operation_id: int) -> None:
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


def _progress(operation: DatasetOperation) -> ProgressCallback:
    return lambda fraction: _progress_set(operation.pk, fraction)


def upload_limits() -> Limits:
    """The bounds an upload is read within: how far it may expand, how large a row and a value may be."""
    return Limits(
        max_expansion_ratio=settings.DATASET_MAX_EXPANSION_RATIO,
        max_line_bytes=settings.DATASET_MAX_LINE_BYTES,
        max_field_bytes=settings.DATASET_MAX_FIELD_BYTES,
    )


def _upload_run(operation: DatasetOperation, tmp: Path) -> dict[str, Any]:
    result = ingest(
        Path(operation.staged_path),
        filename=operation.filename,
        output=tmp / "data.parquet",
        workdir=tmp,
        options=IngestOptions(
            schema=DatasetSchema(operation.schema) if operation.schema else None,
            mapping=operation.mapping or {},
            token_counter=_token_counter(operation, tmp),
            max_tokens=operation.options.get("max_tokens"),
            limits=upload_limits(),
        ),
        on_progress=_progress(operation),
    )
    version = dataset_version_store(
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
        schema=DatasetSchema(source.format),
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
    version = dataset_version_store(
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
        schema=DatasetSchema(source.format),
        fractions=fractions,
        seed=seed,
        on_progress=_progress(operation),
    )
    made = {}
    for part, result in parts.items():
        if not result.row_count:
            continue  # a part too small to hold a row makes no version
        version = dataset_version_store(
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
        eval_schema=DatasetSchema(source.format),
        train_schema=DatasetSchema(train.format),
        n=int(operation.options.get("n", 8)),
        on_progress=_progress(operation),
    )
    return {"result": {"kind": "contamination", "train_version": train.pk, "train": str(train), **found}}


def _pii_run(operation: DatasetOperation, tmp: Path) -> dict[str, Any]:
    source = operation.source_version
    assert source is not None
    found = curation.pii_scan(
        version_parquet_path(source), schema=DatasetSchema(source.format), on_progress=_progress(operation)
    )
    return {"result": {"kind": "pii_scan", **found}}


# --- operations on a stored version ------------------------------------------------------


def _options_store(*, version: DatasetVersion, options: OperationOptions) -> dict[str, Any]:
    """An operation's options as stored for its run, once they fit the version they work on."""
    match options:
        case DedupRequest():
            return {"threshold": options.threshold}
        case SplitRequest():
            return {"fractions": options.fractions, "seed": options.seed}
        case ContaminationRequest():
            train = DatasetVersion.objects.filter(
                pk=options.train_version, dataset__project=version.dataset.project
            ).first()
            if train is None:
                raise NotFound("Name a training version of this project to check against ('train_version').")
            if train.pk == version.pk:
                raise ValidationFailed("Check an eval version against another version, not itself.")
            return {"train_version": train.pk, "n": 8}
    return {}


def dataset_operation_start(
    *, version: DatasetVersion, user: User, options: OperationOptions
) -> DatasetOperation:
    """Queue dedup, a split, a contamination check or a PII scan of a stored version."""
    project_role_check(user=user, project=version.dataset.project, role=Role.MEMBER)
    if not version.uri.endswith(".parquet"):
        raise ValidationFailed("This version was stored before Parquet; upload it again to work on it.")
    kind = OperationKind(options.kind)
    checked = _options_store(version=version, options=options)
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
