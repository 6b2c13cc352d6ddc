from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from controlplane.accounts.models import Role
from controlplane.accounts.selectors import project_get
from controlplane.datasets import services
from controlplane.errors import ValidationFailed, page_errors


@login_required
@require_POST
@page_errors
def dataset_upload(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_get(user=request.user, slug=slug, role=Role.MEMBER)
    upload = request.FILES.get("file")
    if upload is None:
        raise ValidationFailed("Choose a JSONL file to upload.")
    version = services.dataset_version_create(
        project=project, user=request.user, name=request.POST.get("name", ""), upload=upload
    )
    messages.success(request, f"Stored {version} ({version.row_count} rows).")
    return redirect("project", slug=slug)
