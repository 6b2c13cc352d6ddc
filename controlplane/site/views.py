"""Pages that show several apps at once, composed here above all of them: a project's sections
(overview, datasets, models and deployments, sweeps, settings; the runs table and the dashboard live in
their own apps) and a dataset version's page with its lineage (the jobs trained on it, the models
registered from them)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from django.contrib.auth.decorators import login_required
from django.contrib.staticfiles import finders
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from controlplane.accounts.requests import AuthenticatedHttpRequest
from controlplane.accounts.selectors import project_list, project_page_context
from controlplane.datasets import selectors as dataset_selectors
from controlplane.datasets.preview import version_rows
from controlplane.errors import DomainError, page_errors
from controlplane.registry.models import PromotionStatus, Target
from controlplane.registry.selectors import (
    dataset_version_lineage,
    deployment_list,
    model_version_list,
    promotion_list,
)
from controlplane.sweeps.models import SweepStatus
from controlplane.sweeps.selectors import sweep_list
from controlplane.training.models import JobStatus
from controlplane.training.selectors import base_model_list, job_list
from workers.spec import DatasetSchema

PREVIEW_PAGE_ROWS = 20
FAVICON_MAX_AGE = 24 * 3600
# The overview shows this many newest runs and links to the runs table for the rest.
OVERVIEW_RECENT_JOBS = 10
ACTIVE_JOB_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELLING)
SCHEMA_LABELS = {
    "text": "Plain text",
    "instruction": "Instruction / input / output",
    "chat": "Chat messages",
    "preference": "Preference pairs (prompt / chosen / rejected)",
    "multiple_choice": "Multiple choice (question / choices / answer)",
}


@login_required
def home(request: AuthenticatedHttpRequest) -> HttpResponse:
    projects = list(project_list(user=request.user))
    if len(projects) == 1:
        return redirect("project", slug=projects[0].slug)
    return render(request, "home.html", {"projects": projects})


@login_required
@page_errors
def project_overview(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    """What needs the reader now: what runs and waits, the newest runs, deployments, open requests."""
    context = project_page_context(user=request.user, slug=slug)
    project = context["project"]
    jobs = job_list(project=project)
    return render(
        request,
        "project_overview.html",
        {
            **context,
            "active_jobs": list(jobs.filter(status__in=ACTIVE_JOB_STATUSES).order_by("created_at")[:50]),
            "recent_jobs": list(jobs.order_by("-created_at", "-pk")[:OVERVIEW_RECENT_JOBS]),
            "active_sweeps": list(
                sweep_list(project=project).filter(status__in=(SweepStatus.RUNNING, SweepStatus.PAUSED))[:20]
            ),
            "deployments": deployment_list(user=request.user, project=project),
            "promotions": list(
                promotion_list(project=project)
                .filter(status__in=(PromotionStatus.REQUESTED, PromotionStatus.APPROVING))
                .order_by("-requested_at")[:50]
            ),
        },
    )


@login_required
@page_errors
def project_datasets(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    context = project_page_context(user=request.user, slug=slug)
    project = context["project"]
    return render(
        request,
        "project_datasets.html",
        {
            **context,
            "dataset_versions": dataset_selectors.dataset_version_list(project=project),
            "base_models": base_model_list(project=project),
            "dataset_schemas": [(schema.value, _schema_label(schema.value)) for schema in DatasetSchema],
        },
    )


@login_required
@page_errors
def project_models(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    context = project_page_context(user=request.user, slug=slug)
    project = context["project"]
    return render(
        request,
        "project_models.html",
        {
            **context,
            "deployments": deployment_list(user=request.user, project=project),
            "promotions": promotion_list(project=project).order_by("-requested_at")[:100],
            "model_versions": model_version_list(project=project).order_by("-created_at", "-pk"),
            "base_models": base_model_list(project=project),
            "targets": Target.choices,
        },
    )


@login_required
@page_errors
def project_sweeps(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    context = project_page_context(user=request.user, slug=slug)
    return render(
        request,
        "project_sweeps.html",
        {**context, "sweeps": sweep_list(project=context["project"]).select_related("created_by")[:200]},
    )


@login_required
@page_errors
def project_settings(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    context = project_page_context(user=request.user, slug=slug)
    project = context["project"]
    return render(
        request,
        "project_settings.html",
        {
            **context,
            "members": project.memberships.select_related("user").order_by("user__username"),
            "base_models": base_model_list(project=project),
        },
    )


def _schema_label(value: str) -> str:
    return SCHEMA_LABELS.get(value, value.replace("_", " ").capitalize())


def _page_offset(request: HttpRequest) -> int:
    raw = request.GET.get("offset", "0")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 13 else 0


@login_required
@page_errors
def version_detail(request: AuthenticatedHttpRequest, version_id: int) -> HttpResponse:
    version = dataset_selectors.dataset_version_get(user=request.user, version_id=version_id)
    offset = _page_offset(request)
    preview_error = ""
    try:
        rows = version_rows(version=version, offset=offset, limit=PREVIEW_PAGE_ROWS)
    except DomainError as exc:
        # The stats and lineage still show when MLflow is away.
        rows, preview_error = [], exc.message
    columns = list(rows[0]) if rows else []
    lengths = {
        name: version.stats[name]
        for name in ("bytes", "tokens", "turns")
        if isinstance(version.stats.get(name), dict)
    }
    return render(
        request,
        "dataset_version.html",
        {
            "version": version,
            "project": version.dataset.project,
            "stats": version.stats,
            "lineage": dataset_version_lineage(version=version),
            "operations": dataset_selectors.dataset_version_operations(version=version),
            "other_versions": dataset_selectors.dataset_version_list(project=version.dataset.project).exclude(
                pk=version.pk
            ),
            "can_edit": dataset_selectors.dataset_version_editable(user=request.user, version=version),
            "columns": columns,
            "rows": [[row[c] for c in columns] for row in rows],
            "offset": offset,
            "row_end": offset + len(rows),
            "previous_offset": max(offset - PREVIEW_PAGE_ROWS, 0) if offset else None,
            "next_offset": offset + PREVIEW_PAGE_ROWS
            if offset + PREVIEW_PAGE_ROWS < version.row_count
            else None,
            "preview_error": preview_error,
            "lengths": [(name, summary) for name, summary in lengths.items() if "p50" in summary],
            "chart": {
                name: summary["histogram"] for name, summary in lengths.items() if "histogram" in summary
            },
        },
    )


@cache
def _favicon_svg() -> bytes:
    path = finders.find("favicon.svg")
    return Path(path).read_bytes() if isinstance(path, str) else b""


def favicon(request: HttpRequest) -> HttpResponse:
    """/favicon.ico, which browsers ask for on their own whatever the page links: the site's icon."""
    response = HttpResponse(_favicon_svg(), content_type="image/svg+xml")
    response["Cache-Control"] = f"public, max-age={FAVICON_MAX_AGE}"
    return response
