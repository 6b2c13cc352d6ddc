"""Pages' actions of the registry: register a job, request, approve or reject a promotion."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from controlplane.accounts.requests import AuthenticatedHttpRequest
from controlplane.errors import page_errors
from controlplane.registry import selectors, services
from controlplane.training.selectors import job_get


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
    return redirect("project-models", slug=version.project.slug)


@login_required
@require_POST
@page_errors
def promotion_approve(request: AuthenticatedHttpRequest, promotion_id: int) -> HttpResponse:
    promotion = selectors.promotion_get(user=request.user, promotion_id=promotion_id)
    deployment = services.promotion_approve(
        promotion=promotion, user=request.user, comment=request.POST.get("comment", "")
    )
    messages.success(request, f"{deployment.model_version} is now {deployment.target} (MLflow alias set).")
    return redirect("project-models", slug=deployment.project.slug)


@login_required
@require_POST
@page_errors
def promotion_reject(request: AuthenticatedHttpRequest, promotion_id: int) -> HttpResponse:
    promotion = selectors.promotion_get(user=request.user, promotion_id=promotion_id)
    promotion = services.promotion_reject(
        promotion=promotion, user=request.user, comment=request.POST.get("comment", "")
    )
    messages.info(request, f"Rejected the promotion of {promotion.model_version}.")
    return redirect("project-models", slug=promotion.model_version.project.slug)
