"""Pages of datasets: the upload form's post, an operation's page and its live part."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from controlplane.accounts.models import Role
from controlplane.accounts.requests import AuthenticatedHttpRequest
from controlplane.accounts.selectors import project_get
from controlplane.datasets import selectors, services
from controlplane.datasets.inputs import IngestRequest, OperationRequest, form_fields, upload_file
from controlplane.datasets.models import DatasetOperation, OperationStatus
from controlplane.errors import ValidationFailed, page_errors, pydantic_parse


@login_required
@require_POST
@page_errors
def dataset_upload(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    project = project_get(user=request.user, slug=slug, role=Role.MEMBER)
    services.upload_charset_check((request.content_params or {}).get("charset"))
    upload = upload_file(request.FILES)
    if upload is None:
        raise ValidationFailed("Choose a dataset file to upload.")
    body = pydantic_parse(IngestRequest, form_fields(request.POST, leave_out=("csrfmiddlewaretoken", "file")))
    operation = services.dataset_ingest_create(
        project=project,
        user=request.user,
        name=body.name,
        upload=upload,
        schema=body.schema_,
        mapping=body.mapping,
        tokenizer=body.tokenizer,
        max_tokens=body.max_tokens,
    )
    if operation.status == OperationStatus.SUCCEEDED and operation.version is not None:
        messages.success(request, f"Stored {operation.version} ({operation.version.row_count} rows).")
        return redirect("project-datasets", slug=slug)
    # Still running, or failed with a report: its page shows either.
    return redirect("dataset-operation", operation_id=operation.pk)


def _operation_context(operation: DatasetOperation) -> dict:
    report = operation.report or {}
    examples = report.get("examples", {})
    rows = [(kind, count, examples.get(kind, [])) for kind, count in report.get("counts", {}).items()]
    return {"operation": operation, "project": operation.project, "report_rows": rows}


@login_required
@page_errors
def operation_detail(request: AuthenticatedHttpRequest, operation_id: int) -> HttpResponse:
    operation = selectors.dataset_operation_get(user=request.user, operation_id=operation_id)
    return render(request, "dataset_operation.html", _operation_context(operation))


@login_required
@page_errors
def operation_live(request: AuthenticatedHttpRequest, operation_id: int) -> HttpResponse:
    operation = selectors.dataset_operation_get(user=request.user, operation_id=operation_id)
    return render(request, "_dataset_operation_live.html", _operation_context(operation))


@login_required
@require_POST
@page_errors
def version_operation_start(request: AuthenticatedHttpRequest, version_id: int) -> HttpResponse:
    version = selectors.dataset_version_get(user=request.user, version_id=version_id, role=Role.MEMBER)
    fields = {key: value for key, value in request.POST.items() if key != "csrfmiddlewaretoken"}
    options = pydantic_parse(OperationRequest, fields, tagged=True).root
    operation = services.dataset_operation_start(version=version, user=request.user, options=options)
    return redirect("dataset-operation", operation_id=operation.pk)
