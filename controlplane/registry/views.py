"""Pages' actions of the registry: register a job, request, approve, reject or withdraw a promotion,
comment on it, roll a target back.

Each action goes back where the form asked (its ``next`` field, when it is a page of this site),
else to the project's models page.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from controlplane.accounts.requests import AuthenticatedHttpRequest
from controlplane.errors import ValidationFailed, page_errors
from controlplane.registry import selectors, services
from controlplane.registry.models import Promotion
from controlplane.training.selectors import job_get


def _back(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    wanted = request.POST.get("next", "")
    if wanted.startswith("/") and url_has_allowed_host_and_scheme(wanted, allowed_hosts={request.get_host()}):
        return redirect(wanted)
    return redirect(reverse("project-models", kwargs={"slug": slug}))


def _slug(promotion: Promotion) -> str:
    return promotion.model_version.project.slug


@login_required
@require_POST
@page_errors
def model_version_register(request: AuthenticatedHttpRequest, job_id: int) -> HttpResponse:
    job = job_get(user=request.user, job_id=job_id)
    version = services.model_version_create(job=job, user=request.user, name=request.POST.get("name", ""))
    messages.success(request, f"Registered {version}.")
    return redirect("project-models", slug=job.project.slug)


@login_required
@require_POST
@page_errors
def promotion_request(request: AuthenticatedHttpRequest, version_id: int) -> HttpResponse:
    version = selectors.model_version_get(user=request.user, model_version_id=version_id)
    promotion = services.promotion_request(
        model_version=version,
        user=request.user,
        target=request.POST.get("target", ""),
        comment=request.POST.get("comment", ""),
    )
    messages.success(request, f"Asked to promote {version} to {promotion.target}.")
    return _back(request, version.project.slug)


@login_required
@require_POST
@page_errors
def promotion_approve(request: AuthenticatedHttpRequest, promotion_id: int) -> HttpResponse:
    promotion = selectors.promotion_get(user=request.user, promotion_id=promotion_id)
    deployment = services.promotion_approve(
        promotion=promotion,
        user=request.user,
        comment=request.POST.get("comment", ""),
        override_reason=request.POST.get("override_reason", ""),
    )
    messages.success(request, f"{deployment.model_version} is now {deployment.target} (MLflow alias set).")
    return _back(request, deployment.project.slug)


@login_required
@require_POST
@page_errors
def promotion_reject(request: AuthenticatedHttpRequest, promotion_id: int) -> HttpResponse:
    promotion = selectors.promotion_get(user=request.user, promotion_id=promotion_id)
    promotion = services.promotion_reject(
        promotion=promotion, user=request.user, comment=request.POST.get("comment", "")
    )
    messages.info(request, f"Rejected the promotion of {promotion.model_version}.")
    return _back(request, _slug(promotion))


@login_required
@require_POST
@page_errors
def promotion_withdraw(request: AuthenticatedHttpRequest, promotion_id: int) -> HttpResponse:
    promotion = selectors.promotion_get(user=request.user, promotion_id=promotion_id)
    promotion = services.promotion_withdraw(
        promotion=promotion, user=request.user, comment=request.POST.get("comment", "")
    )
    messages.info(request, f"Withdrew the request for {promotion.model_version} to {promotion.target}.")
    return _back(request, _slug(promotion))


@login_required
@require_POST
@page_errors
def promotion_comment(request: AuthenticatedHttpRequest, promotion_id: int) -> HttpResponse:
    promotion = selectors.promotion_get(user=request.user, promotion_id=promotion_id)
    services.promotion_comment_add(promotion=promotion, user=request.user, body=request.POST.get("body", ""))
    messages.success(request, "Comment added.")
    return _back(request, _slug(promotion))


@login_required
@require_POST
@page_errors
def rollback(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Roll a target back to the version the form names (a choice of the ones it ran before)."""
    chosen = request.POST.get("version", "")
    if not (chosen.isascii() and chosen.isdigit() and len(chosen) < 19):
        raise ValidationFailed("Choose the version to roll back to.")
    version = selectors.model_version_get(user=request.user, model_version_id=int(chosen))
    target = request.POST.get("target", "")
    if request.POST.get("emergency") == "true":
        promotion, deployment = services.rollback_emergency(
            model_version=version, user=request.user, target=target, reason=request.POST.get("reason", "")
        )
        messages.success(request, f"Rolled {deployment.target} back to {version} (emergency, audited).")
    else:
        promotion = services.rollback_request(
            model_version=version, user=request.user, target=target, comment=request.POST.get("comment", "")
        )
        messages.success(
            request, f"Asked to roll {promotion.target} back to {version}; another approver decides."
        )
    return _back(request, version.project.slug)
