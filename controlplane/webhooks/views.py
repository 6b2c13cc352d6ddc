"""The webhooks page of a project: its subscriptions, their secrets and the delivery log."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from controlplane.accounts.models import Role
from controlplane.accounts.requests import AuthenticatedHttpRequest
from controlplane.accounts.selectors import project_get
from controlplane.errors import page_errors
from controlplane.webhooks import selectors, services
from controlplane.webhooks.models import EventType


def _before(request: AuthenticatedHttpRequest) -> int | None:
    raw = request.GET.get("before", "")
    return int(raw) if raw.isascii() and raw.isdigit() and 0 < len(raw) < 19 else None


@login_required
@page_errors
def webhook_list(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    project = project_get(user=request.user, slug=slug, role=Role.ADMIN)
    if request.method == "POST":
        endpoint = services.endpoint_create(
            project=project,
            user=request.user,
            url=request.POST.get("url", "").strip(),
            event_types=request.POST.getlist("event_types"),
            description=request.POST.get("description", "").strip()[:200],
        )
        messages.success(
            request, f"Webhook {endpoint.pk} created: copy its secret below to verify signatures."
        )
        return redirect("project-webhooks", slug=project.slug)
    deliveries, next_before = selectors.delivery_page(project=project, before=_before(request))
    return render(
        request,
        "webhooks.html",
        {
            "project": project,
            "endpoints": selectors.endpoint_list(project=project),
            "deliveries": deliveries,
            "next_before": next_before,
            "event_types": EventType.choices,
        },
    )


@login_required
@require_POST
@page_errors
def webhook_action(request: AuthenticatedHttpRequest, webhook_id: int, action: str) -> HttpResponse:
    endpoint = selectors.endpoint_get(user=request.user, endpoint_id=webhook_id)
    slug = endpoint.project.slug
    if action == "rotate":
        services.endpoint_secret_rotate(endpoint=endpoint, user=request.user)
        messages.success(request, "New secret made; the old one signs too for the next 24 hours.")
    elif action == "delete":
        services.endpoint_delete(endpoint=endpoint, user=request.user)
        messages.info(request, f"Webhook {webhook_id} deleted.")
    else:
        enabled = action == "enable"
        services.endpoint_update(endpoint=endpoint, user=request.user, enabled=enabled)
        messages.info(request, f"Webhook {webhook_id} {'enabled' if enabled else 'disabled'}.")
    return redirect("project-webhooks", slug=slug)


@login_required
@require_POST
@page_errors
def delivery_redeliver(request: AuthenticatedHttpRequest, delivery_id: int) -> HttpResponse:
    delivery = selectors.delivery_get(user=request.user, delivery_id=delivery_id)
    delivery = services.delivery_redeliver(delivery=delivery, user=request.user)
    outcome = "delivered" if delivery.status == "succeeded" else f"not delivered ({delivery.last_error})"
    messages.info(request, f"Sent {delivery.message_id} again: {outcome}.")
    return redirect("project-webhooks", slug=delivery.endpoint.project.slug)
