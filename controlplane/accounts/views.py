from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from controlplane.accounts.models import Role
from controlplane.accounts.selectors import membership_role, project_get, project_list
from controlplane.datasets.models import DatasetFormat
from controlplane.datasets.selectors import dataset_version_list
from controlplane.errors import page_errors
from controlplane.registry.selectors import deployment_list, model_version_list, promotion_list
from controlplane.sweeps.selectors import sweep_list
from controlplane.training.selectors import base_model_list, job_list, usage_by_user

USAGE_DAYS = 30


@login_required
def home(request: HttpRequest) -> HttpResponse:
    projects = list(project_list(user=request.user))
    if len(projects) == 1:
        return redirect("project", slug=projects[0].slug)
    return render(request, "home.html", {"projects": projects})


@login_required
@page_errors
def project_overview(request: HttpRequest, slug: str) -> HttpResponse:
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
            "dataset_versions": dataset_version_list(project=project),
            "base_models": base_model_list(project=project),
            "model_versions": model_version_list(project=project),
            "promotions": promotion_list(project=project)[:50],
            "deployments": deployment_list(user=request.user, project=project),
            "usage": usage_by_user(project=project, days=USAGE_DAYS),
            "usage_days": USAGE_DAYS,
            "dataset_schemas": DatasetFormat.values,
        },
    )
