from __future__ import annotations

from django.db.models import QuerySet

from controlplane.accounts.models import Project, Role
from controlplane.accounts.selectors import project_role_check
from controlplane.datasets.models import DatasetIngest, DatasetVersion
from controlplane.errors import NotFound


def dataset_version_list(*, project: Project) -> QuerySet[DatasetVersion]:
    return (
        DatasetVersion.objects.filter(dataset__project=project)
        .select_related("dataset__project", "created_by")
        .order_by("dataset__name", "-version")
    )


def dataset_version_get(*, user, version_id: int, role: Role = Role.VIEWER) -> DatasetVersion:
    version = (
        DatasetVersion.objects.select_related("dataset__project", "created_by").filter(pk=version_id).first()
    )
    if version is None:
        raise NotFound("No such dataset version.")
    project_role_check(user=user, project=version.dataset.project, role=role)
    return version


def dataset_version_lineage(*, version: DatasetVersion) -> dict[str, list]:
    """The jobs trained on this version and the model versions registered from them."""
    from controlplane.registry.models import ModelVersion

    jobs = list(version.jobs.select_related("created_by", "base_model").order_by("-pk"))
    model_versions = list(
        ModelVersion.objects.filter(job__dataset_version=version).select_related("job").order_by("-pk")
    )
    return {"jobs": jobs, "model_versions": model_versions}


def dataset_ingest_get(*, user, ingest_id: int) -> DatasetIngest:
    ingest = (
        DatasetIngest.objects.select_related("project", "created_by", "version__dataset")
        .filter(pk=ingest_id)
        .first()
    )
    if ingest is None:
        raise NotFound("No such ingest.")
    project_role_check(user=user, project=ingest.project, role=Role.VIEWER)
    return ingest


def dataset_ingest_list(*, project: Project, limit: int = 10) -> list[DatasetIngest]:
    return list(
        DatasetIngest.objects.filter(project=project)
        .select_related("created_by", "version__dataset")
        .order_by("-created_at")[:limit]
    )
