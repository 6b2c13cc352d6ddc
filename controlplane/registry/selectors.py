"""Reads of the registry, scoped by project role, and a dataset version's lineage."""

from __future__ import annotations

from django.db.models import QuerySet

from controlplane.accounts.models import Project, Role, User
from controlplane.accounts.selectors import project_list, project_role_check
from controlplane.datasets.models import DatasetVersion
from controlplane.errors import NotFound
from controlplane.registry.models import Deployment, ModelVersion, Promotion


def model_version_list(*, project: Project) -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(project=project).select_related("project", "job", "created_by")


def model_version_get(*, user: User, model_version_id: int, role: Role = Role.VIEWER) -> ModelVersion:
    version = ModelVersion.objects.select_related("project", "job").filter(pk=model_version_id).first()
    if version is None:
        raise NotFound("Not found.")
    project_role_check(user=user, project=version.project, role=role)
    return version


def promotion_list(*, project: Project) -> QuerySet[Promotion]:
    return Promotion.objects.filter(model_version__project=project).select_related(
        "model_version", "requested_by", "decided_by"
    )


def promotion_get(*, user: User, promotion_id: int) -> Promotion:
    promotion = (
        Promotion.objects.select_related("model_version__project", "requested_by")
        .filter(pk=promotion_id)
        .first()
    )
    if promotion is None:
        raise NotFound("Not found.")
    project_role_check(user=user, project=promotion.model_version.project, role=Role.VIEWER)
    return promotion


def deployment_list(
    *, user: User, target: str | None = None, project: Project | None = None
) -> QuerySet[Deployment]:
    deployments = Deployment.objects.filter(project__in=project_list(user=user)).select_related(
        "project", "model_version", "approved_by"
    )
    if target:
        deployments = deployments.filter(target=target)
    if project is not None:
        deployments = deployments.filter(project=project)
    return deployments


def dataset_version_lineage(*, version: DatasetVersion) -> dict[str, list]:
    """The jobs trained on a dataset version and the model versions registered from them."""
    jobs = list(version.jobs.select_related("created_by", "base_model").order_by("-pk"))
    model_versions = list(
        ModelVersion.objects.filter(job__dataset_version=version).select_related("job").order_by("-pk")
    )
    return {"jobs": jobs, "model_versions": model_versions}
