"""Dataset versions: content stored once in MLflow, numbered per dataset, found again by its hash."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Max

from controlplane import tracking
from controlplane.accounts.models import Project, User
from controlplane.datasets.ingest.pipeline import IngestResult
from controlplane.datasets.models import Dataset, DatasetVersion


def dataset_version_store(
    *,
    project: Project,
    user: User,
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
    user: User,
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
