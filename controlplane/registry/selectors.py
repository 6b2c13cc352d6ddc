"""Reads of the registry, scoped by project role, and a dataset version's lineage."""

from __future__ import annotations

from django.db.models import QuerySet

from controlplane.accounts.models import Project, Role, User
from controlplane.accounts.selectors import project_list, project_role_check
from controlplane.datasets.models import DatasetVersion
from controlplane.errors import NotFound
from controlplane.registry.models import (
    Deployment,
    ModelVersion,
    Promotion,
    PromotionComment,
    PromotionEvent,
    PromotionStatus,
)


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
        Promotion.objects.select_related("model_version__project", "requested_by", "decided_by")
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


def model_names(*, project: Project) -> list[str]:
    """The project's registered models, by name."""
    return list(
        ModelVersion.objects.filter(project=project)
        .values_list("name", flat=True)
        .distinct()
        .order_by("name")
    )


def model_version_by_number(*, project: Project, name: str, version: int) -> ModelVersion:
    """Version ``version`` (MLflow's number) of model ``name``; the project's reader is checked already."""
    found = (
        ModelVersion.objects.select_related("project", "job__base_model", "job__dataset_version__dataset")
        .filter(project=project, name=name, version=version)
        .first()
    )
    if found is None:
        raise NotFound("Not found.")
    return found


def promotion_comment_list(*, promotion: Promotion) -> QuerySet[PromotionComment]:
    return PromotionComment.objects.filter(promotion=promotion).select_related("author").order_by("at", "pk")


def promotion_event_list(*, promotion: Promotion) -> QuerySet[PromotionEvent]:
    return PromotionEvent.objects.filter(promotion=promotion).select_related("actor").order_by("at", "pk")


def deployment_history(
    *, project: Project, model_name: str, target: str | None = None
) -> QuerySet[Promotion]:
    """What was deployed to each target of model ``model_name``, and when: its approved promotions
    (rollbacks included) in the order they were decided, the last one per target running now."""
    history = Promotion.objects.filter(
        model_version__project=project, model_version__name=model_name, status=PromotionStatus.APPROVED
    ).select_related("model_version", "requested_by", "decided_by")
    if target is not None:
        history = history.filter(target=target)
    return history.order_by("decided_at", "pk")


def rollback_choices(*, project: Project, model_name: str, target: str) -> list[ModelVersion]:
    """The versions ``target`` may be rolled back to: the ones it ran before, not the one it runs now,
    newest first."""
    current = Deployment.objects.filter(project=project, model_name=model_name, target=target).values_list(
        "model_version_id", flat=True
    )
    return list(
        ModelVersion.objects.filter(
            project=project,
            name=model_name,
            promotions__target=target,
            promotions__status=PromotionStatus.APPROVED,
        )
        .exclude(pk__in=current)
        .distinct()
        .order_by("-version")
    )


def deployed_promotion_ids(*, project: Project, model_name: str) -> set[int]:
    """The promotions whose versions model ``model_name``'s targets run now."""
    return set(
        Deployment.objects.filter(project=project, model_name=model_name).values_list(
            "promotion_id", flat=True
        )
    )
