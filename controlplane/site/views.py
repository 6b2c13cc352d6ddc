"""Pages that show several apps at once, composed here above all of them: a project's overview
and a dataset version's page with its lineage (the jobs trained on it, the models registered from them)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from controlplane.accounts.models import Role
from controlplane.accounts.requests import AuthenticatedHttpRequest
from controlplane.accounts.selectors import membership_role, project_get, project_list
from controlplane.datasets import selectors as dataset_selectors
from controlplane.datasets.preview import version_rows
from controlplane.errors import DomainError, page_errors
from controlplane.registry.selectors import (
    dataset_version_lineage,
    deployment_list,
    model_version_list,
    promotion_list,
)
from controlplane.sweeps.selectors import sweep_list
from controlplane.training.selectors import base_model_list, job_list, usage_by_user
from workers.spec import DatasetSchema

USAGE_DAYS = 30
PREVIEW_PAGE_ROWS = 20


@login_required
def home(request: AuthenticatedHttpRequest) -> HttpResponse:
    projects = list(project_list(user=request.user))
    if len(projects) == 1:
        return redirect("project", slug=projects[0].slug)
    return render(request, "home.html", {"projects": projects})


@login_required
@page_errors
def project_overview(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    project = project_get(user=request.user, slug=slug)
    role = membership_role(user=request.user, project=project)
    return render(
        request,
        "project.html",
        {
            "project": project,
            "role": role,
            "can_edit": role is not None and role.includes(Role.MEMBER),
            "can_approve": role is not None and role.includes(Role.APPROVER),
            "can_admin": role is not None and role.includes(Role.ADMIN),
            "jobs": job_list(project=project)[:50],
            "sweeps": sweep_list(project=project)[:20],
            "dataset_versions": dataset_selectors.dataset_version_list(project=project),
            "base_models": base_model_list(project=project),
            "model_versions": model_version_list(project=project),
            "promotions": promotion_list(project=project)[:50],
            "deployments": deployment_list(user=request.user, project=project),
            "usage": usage_by_user(project=project, days=USAGE_DAYS),
            "usage_days": USAGE_DAYS,
            "dataset_schemas": [schema.value for schema in DatasetSchema],
        },
    )


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
