"""The dashboards' pages: one project's, and the organisation's (every project the reader may see).

Both take a date range in the query string (``days`` preset, or ``from``/``to``);
``?format=csv&table=<name>`` downloads one of the page's tables with the same
permissions. A bad range or table name is a 400 with a message, never a 500.
"""

from __future__ import annotations

import csv
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.utils.text import slugify

from controlplane.accounts.models import Project
from controlplane.accounts.requests import AuthenticatedHttpRequest
from controlplane.accounts.selectors import project_get, project_list_readable
from controlplane.dashboards import selectors
from controlplane.errors import NotFound, ValidationFailed, page_errors


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    # Text a spreadsheet would run as a formula (a job name, a failure reason) stays text.
    if not isinstance(value, int | float) and text[:1] in ("=", "+", "-", "@"):
        return "'" + text
    return text


def _csv(table: selectors.Table, filename: str) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}.csv"'
    writer = csv.writer(response)
    writer.writerow(table.columns)
    writer.writerows([_cell(cell) for cell in row] for row in table.rows)
    return response


def _dashboard(
    request: AuthenticatedHttpRequest, *, projects: list[Project], name: str, context: dict[str, Any]
) -> HttpResponse:
    error, status = "", 200
    try:
        dates = selectors.date_range_parse(request.GET.dict())
    except ValidationFailed as exc:
        if request.GET.get("format") == "csv":
            return HttpResponse(exc.message, status=400, content_type="text/plain; charset=utf-8")
        error, status, dates = exc.message, 400, selectors.date_range_default()
    scope = selectors.Scope(projects=projects, dates=dates)
    if request.GET.get("format") == "csv":
        try:
            table = selectors.dashboard_table(scope=scope, name=request.GET.get("table", ""))
        except ValidationFailed as exc:
            return HttpResponse(exc.message, status=400, content_type="text/plain; charset=utf-8")
        return _csv(table, f"{slugify(name)}-{table.name}-{dates.first}-{dates.last}")
    return render(
        request,
        "dashboard.html",
        {
            **context,
            **selectors.dashboard_build(scope=scope),
            "dates": dates,
            "presets": selectors.PRESET_DAYS,
            "preset": dates.days if dates == selectors.date_range_default(days=dates.days) else None,
            "range_error": error,
            "projects_seen": projects,
        },
        status=status,
    )


@login_required
@page_errors
def project_dashboard(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    project = project_get(user=request.user, slug=slug)
    return _dashboard(
        request,
        projects=[project],
        name=project.slug,
        context={"project": project, "title": f"{project.name}: dashboard"},
    )


@login_required
@page_errors
def organisation_dashboard(request: AuthenticatedHttpRequest) -> HttpResponse:
    projects = list(project_list_readable(user=request.user))
    if not projects:
        # Someone in no project has nothing to read here, as on the workers page.
        raise NotFound("Not found.")
    return _dashboard(request, projects=projects, name="organisation", context={"title": "Dashboard"})
