from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Max

from controlplane import tracking
from controlplane.accounts.models import Project, Role
from controlplane.accounts.selectors import project_role_check
from controlplane.datasets.models import Dataset, DatasetFormat, DatasetVersion
from controlplane.datasets.validation import instruction_file_check
from controlplane.errors import ValidationFailed
from controlplane.naming import name_check


def _safe_filename(name: str) -> str:
    # Only the last path component, in a plain alphabet: no traversal, no surprises.
    base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name or "data.jsonl").name).lstrip(".")
    return base[:200] or "data.jsonl"


def dataset_version_create(*, project: Project, user, name: str, upload: UploadedFile) -> DatasetVersion:
    """Validate an uploaded JSONL instruction file and store it as the dataset's next version.

    The same content uploaded again returns the existing version. A file with
    any bad line stores nothing.
    """
    project_role_check(user=user, project=project, role=Role.MEMBER)
    name_check(name, what="dataset")
    if upload.size is not None and upload.size > settings.DATASET_MAX_UPLOAD_BYTES:
        raise ValidationFailed(
            f"The file is {upload.size} bytes; the limit is {settings.DATASET_MAX_UPLOAD_BYTES}."
        )
    upload.seek(0)
    summary = instruction_file_check(upload)

    existing = DatasetVersion.objects.filter(
        dataset__project=project, dataset__name=name, sha256=summary.sha256
    ).first()
    if existing is not None:
        return existing

    filename = _safe_filename(upload.name)
    # Stored before the rows exist: a failed upload leaves no row pointing nowhere.
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / filename
        upload.seek(0)
        with local.open("wb") as out:
            shutil.copyfileobj(upload, out)
        size_bytes = local.stat().st_size
        uri = tracking.artifact_upload(
            local,
            experiment=f"tuneyard/{project.slug}/datasets",
            run_name=f"dataset-{name}",
            artifact_path="dataset",
            tags={
                "tuneyard.project": project.slug,
                "tuneyard.dataset": name,
                "tuneyard.sha256": summary.sha256,
            },
        )

    with transaction.atomic():
        dataset, _ = Dataset.objects.get_or_create(project=project, name=name)
        # Lock the dataset row so two uploads cannot take the same version number.
        Dataset.objects.select_for_update().filter(pk=dataset.pk).first()
        existing = dataset.versions.filter(sha256=summary.sha256).first()
        if existing is not None:
            return existing
        latest = dataset.versions.aggregate(n=Max("version"))["n"] or 0
        return DatasetVersion.objects.create(
            dataset=dataset,
            version=latest + 1,
            format=DatasetFormat.INSTRUCTION,
            sha256=summary.sha256,
            uri=uri,
            filename=filename,
            row_count=summary.row_count,
            size_bytes=size_bytes,
            created_by=user,
        )
