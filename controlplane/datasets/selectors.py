"""Reads of datasets, scoped by the reader's project role."""

from __future__ import annotations

from django.db.models import QuerySet

from controlplane.accounts.models import Project, Role, User
from controlplane.accounts.selectors import membership_role, project_role_check
from controlplane.datasets.models import DatasetOperation, DatasetVersion, OperationKind, OperationStatus
from controlplane.errors import NotFound


def dataset_version_list(*, project: Project) -> QuerySet[DatasetVersion]:
    return (
        DatasetVersion.objects.filter(dataset__project=project)
        .select_related("dataset__project", "created_by")
        .order_by("dataset__name", "-version")
    )


def dataset_version_get(*, user: User, version_id: int, role: Role = Role.VIEWER) -> DatasetVersion:
    version = (
        DatasetVersion.objects.select_related("dataset__project", "created_by").filter(pk=version_id).first()
    )
    if version is None:
        raise NotFound("Not found.")
    project_role_check(user=user, project=version.dataset.project, role=role)
    return version


def dataset_operation_get(*, user: User, operation_id: int) -> DatasetOperation:
    operation = (
        DatasetOperation.objects.select_related("project", "created_by", "version__dataset")
        .filter(pk=operation_id)
        .first()
    )
    if operation is None:
        raise NotFound("Not found.")
    project_role_check(user=user, project=operation.project, role=Role.VIEWER)
    return operation


def dataset_operation_list(*, project: Project, limit: int = 10) -> list[DatasetOperation]:
    return list(
        DatasetOperation.objects.filter(project=project)
        .select_related("created_by", "version__dataset")
        .order_by("-created_at")[:limit]
    )


def dataset_version_operations(*, version: DatasetVersion, limit: int = 20) -> list[DatasetOperation]:
    """The latest operations run on this version (dedup, splits, checks), newest first."""
    return list(
        DatasetOperation.objects.filter(source_version=version)
        .select_related("created_by", "version__dataset")
        .order_by("-created_at")[:limit]
    )


def dataset_version_editable(*, user: User, version: DatasetVersion) -> bool:
    role = membership_role(user=user, project=version.dataset.project)
    return role is not None and role.includes(Role.MEMBER)


def contamination_checks(*, project: Project, limit: int = 20) -> list[dict]:
    """The latest finished contamination check of each (eval, train) pair of the project, newest first.

    Shown on the launch form, so a person sees before training whether an
    evaluation set overlaps the data they are about to train on.
    """
    operations = (
        DatasetOperation.objects.filter(
            project=project, kind=OperationKind.CONTAMINATION, status=OperationStatus.SUCCEEDED
        )
        .select_related("source_version__dataset__project")  # its name is shown
        .order_by("-finished_at")
    )
    checks, seen = [], set()
    for operation in operations[: limit * 5]:
        result = operation.result or {}
        pair = (operation.source_version_id, result.get("train_version"))
        if pair in seen or None in pair:
            continue
        seen.add(pair)
        checks.append(
            {
                "train_version": result["train_version"],
                "train": result.get("train", ""),
                "eval": str(operation.source_version),
                "contaminated_rows": result.get("contaminated_rows", 0),
                "eval_rows": result.get("eval_rows", 0),
                "n": result.get("n", 8),
                "checked_at": operation.finished_at,
                "operation_id": operation.pk,
            }
        )
    return checks[:limit]
