from __future__ import annotations

from django.db.models import QuerySet

from controlplane.accounts.models import Project, Role
from controlplane.accounts.selectors import project_role_check
from controlplane.datasets.models import DatasetVersion
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
