from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from controlplane.accounts.models import Role
from controlplane.accounts.selectors import project_get
from controlplane.datasets import selectors, services
from controlplane.datasets.models import OperationStatus
from controlplane.datasets.preview import version_rows
from controlplane.errors import DomainError, ValidationFailed, page_errors

PREVIEW_PAGE_ROWS = 20


@login_required
@require_POST
@page_errors
def dataset_upload(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_get(user=request.user, slug=slug, role=Role.MEMBER)
    upload = request.FILES.get("file")
    if upload is None:
        raise ValidationFailed("Choose a dataset file to upload.")
    operation = services.dataset_ingest_create(
        project=project,
        user=request.user,
        name=request.POST.get("name", ""),
        upload=upload,
        schema=request.POST.get("schema", ""),
        mapping=request.POST.get("mapping", ""),
        tokenizer=request.POST.get("tokenizer", ""),
        max_tokens=request.POST.get("max_tokens", ""),
    )
    if operation.status == OperationStatus.SUCCEEDED and operation.version is not None:
        messages.success(request, f"Stored {operation.version} ({operation.version.row_count} rows).")
        return redirect("project", slug=slug)
    # Still running, or failed with a report: its page shows either.
    return redirect("dataset-operation", operation_id=operation.pk)


def _operation_context(operation) -> dict:  # type: ignore[no-untyped-def]
    report = operation.report or {}
    examples = report.get("examples", {})
    rows = [(kind, count, examples.get(kind, [])) for kind, count in report.get("counts", {}).items()]
    return {"operation": operation, "project": operation.project, "report_rows": rows}


@login_required
@page_errors
def operation_detail(request: HttpRequest, operation_id: int) -> HttpResponse:
    operation = selectors.dataset_operation_get(user=request.user, operation_id=operation_id)
    return render(request, "dataset_operation.html", _operation_context(operation))


@login_required
@page_errors
def operation_live(request: HttpRequest, operation_id: int) -> HttpResponse:
    operation = selectors.dataset_operation_get(user=request.user, operation_id=operation_id)
    return render(request, "_dataset_operation_live.html", _operation_context(operation))


@login_required
@require_POST
@page_errors
def version_operation_start(request: HttpRequest, version_id: int) -> HttpResponse:
    version = selectors.dataset_version_get(user=request.user, version_id=version_id, role=Role.MEMBER)
    options = {k: v for k, v in request.POST.items() if k not in ("kind", "csrfmiddlewaretoken")}
    operation = services.dataset_operation_start(
        version=version, user=request.user, kind=request.POST.get("kind", ""), options=options
    )
    return redirect("dataset-operation", operation_id=operation.pk)


def _page_offset(request: HttpRequest) -> int:
    raw = request.GET.get("offset", "0")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 13 else 0


@login_required
@page_errors
def version_detail(request: HttpRequest, version_id: int) -> HttpResponse:
    version = selectors.dataset_version_get(user=request.user, version_id=version_id)
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
            "lineage": selectors.dataset_version_lineage(version=version),
            "operations": selectors.dataset_version_operations(version=version),
            "other_versions": selectors.dataset_version_list(project=version.dataset.project).exclude(
                pk=version.pk
            ),
            "can_edit": selectors.dataset_version_editable(user=request.user, version=version),
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
