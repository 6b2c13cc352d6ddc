"""Reads of webhooks. Subscriptions hold secrets, so only a project's admins read them."""

from __future__ import annotations

from django.db.models import QuerySet

from controlplane.accounts.models import Project, Role, User
from controlplane.accounts.selectors import project_role_check
from controlplane.errors import NotFound
from controlplane.webhooks.models import Delivery, Endpoint

DELIVERY_PAGE = 50


def endpoint_list(*, project: Project) -> QuerySet[Endpoint]:
    return Endpoint.objects.filter(project=project).order_by("pk")


def endpoint_get(*, user: User, endpoint_id: int) -> Endpoint:
    endpoint = Endpoint.objects.select_related("project").filter(pk=endpoint_id).first()
    if endpoint is None:
        raise NotFound("Not found.")
    project_role_check(user=user, project=endpoint.project, role=Role.ADMIN)
    return endpoint


def delivery_page(
    *,
    project: Project,
    endpoint: Endpoint | None = None,
    before: int | None = None,
    limit: int = DELIVERY_PAGE,
) -> tuple[list[Delivery], int | None]:
    """Newest first; with the cursor for the next page (the last row's id), or None at the end."""
    rows = Delivery.objects.filter(endpoint__project=project).select_related("event", "endpoint")
    if endpoint is not None:
        rows = rows.filter(endpoint=endpoint)
    if before is not None:
        rows = rows.filter(pk__lt=before)
    page = list(rows.order_by("-pk")[: limit + 1])
    return page[:limit], (page[limit - 1].pk if len(page) > limit else None)


def delivery_get(*, user: User, delivery_id: int) -> Delivery:
    delivery = (
        Delivery.objects.select_related("endpoint__project", "event")
        .prefetch_related("attempt_log")
        .filter(pk=delivery_id)
        .first()
    )
    if delivery is None:
        raise NotFound("Not found.")
    project_role_check(user=user, project=delivery.endpoint.project, role=Role.ADMIN)
    return delivery
