"""The runs table: ``/p/<slug>/runs`` (one project) and ``/runs/`` (every project the person is in).

All of the table's state is in its URL (filters, search, sort, columns, the
page's cursor), so a view of the runs can be shared as a link. The bulk
actions post the selected rows to ``runs/bulk``.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from controlplane.accounts.models import Project, Role
from controlplane.accounts.requests import AuthenticatedHttpRequest
from controlplane.accounts.selectors import membership_role, project_get, project_list
from controlplane.datasets.models import Dataset
from controlplane.errors import Conflict, Forbidden, ValidationFailed, page_errors
from controlplane.experiments import selectors
from controlplane.experiments.compare import MAX_RUNS, MIN_RUNS
from controlplane.training.api import JobListQuery
from controlplane.training.models import JOB_KIND_CHOICES, BaseModel, Job, JobStatus
from controlplane.training.services import job_cancel, jobs_tag
from workers.spec import METHOD_CLASSES

MAX_BULK = 200


@login_required
@require_GET
@page_errors
def project_runs(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    project = project_get(user=request.user, slug=slug)
    return _runs_page(request, project)


@login_required
@require_GET
@page_errors
def all_runs(request: AuthenticatedHttpRequest) -> HttpResponse:
    return _runs_page(request, None)


def _runs_page(request: AuthenticatedHttpRequest, project: Project | None) -> HttpResponse:
    params = request.GET.copy()
    # The column chooser's boxes (cols=a&cols=b) or a shared link's cols=a,b; absent: the defaults.
    chosen = params.pop("cols", None)
    cols = ",".join(chosen) if chosen is not None else None
    context: dict[str, Any] = {
        "project": project,
        "projects": list(project_list(user=request.user)) if project is None else [project],
        "statuses": JobStatus.values,
        "kinds": JOB_KIND_CHOICES,
        "methods": [
            (cls.model_fields["name"].default, cls.title or cls.model_fields["name"].default)
            for cls in METHOD_CLASSES
        ],
        "params": request.GET,
        "table": None,
        "base_models": list(BaseModel.objects.filter(project=project).values_list("pk", "name"))
        if project is not None
        else [],
        "datasets": list(Dataset.objects.filter(project=project).values_list("pk", "name"))
        if project is not None
        else [],
        "min_runs": MIN_RUNS,
        "max_runs": MAX_RUNS,
        "can_edit": project is not None
        and (role := membership_role(user=request.user, project=project)) is not None
        and role.includes(Role.MEMBER),
    }
    try:
        query = JobListQuery.of(params, drop_empty=True)
        if query.project is not None:
            raise ValidationFailed("project: choose the project by its page (/p/<slug>/runs).")
        table = selectors.runs_table(
            user=request.user,
            project=project,
            filters=query.filters(),
            order=query.order(),
            cursor=query.cursor,
            limit=query.limit,
            columns=selectors.runs_columns_parse(cols),
        )
    except ValidationFailed as exc:
        context["error"] = exc.message
        return render(request, "runs.html", context, status=400)
    context["table"] = table
    context["links"] = _links(request.GET, table)
    context["bulk_next"] = request.get_full_path()
    return render(request, "runs.html", context)


def _links(current: QueryDict, table: selectors.RunsTable) -> dict[str, Any]:
    """The URLs the table's controls lead to: each keeps every other part of the view."""

    def with_(**changes: str | None) -> str:
        query = current.copy()
        for key, value in changes.items():
            query.pop(key, None)
            if value is not None:
                query[key] = value
        return "?" + query.urlencode()

    order = table.order
    sorts = {}
    for key in ["created_at", "name", "status", "run_seconds", *table.columns]:
        descending = not (order.key == key and order.descending)
        sorts[key] = {
            "url": with_(ordering=f"-{key}" if descending else key, cursor=None),
            "active": order.key == key,
            "descending": order.descending,
        }
    return {
        "next": with_(cursor=table.next_cursor) if table.next_cursor else None,
        "first": with_(cursor=None) if current.get("cursor") else None,
        "sorts": sorts,
        "column_sorts": [(col, col.partition(".")[2], sorts[col]) for col in table.columns],
    }


@login_required
@require_POST
@page_errors
def runs_bulk(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Compare, cancel or tag the selected runs (``job`` ids), then back to the table (``next``)."""
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        back = reverse("runs")
    action = request.POST.get("action", "")
    raw = request.POST.getlist("job")
    if not raw:
        messages.error(request, "Select one or more runs first.")
        return redirect(back)
    if len(raw) > MAX_BULK or not all(
        value.isascii() and value.isdigit() and len(value) < 19 for value in raw
    ):
        raise ValidationFailed(f"job: up to {MAX_BULK} run ids.")
    ids = sorted({int(value) for value in raw})
    # Only what the person can see; an id of another project is as if it were not there.
    jobs = list(
        Job.objects.filter(pk__in=ids, project__in=project_list(user=request.user)).select_related("project")
    )
    if len(jobs) != len(ids):
        messages.error(request, "Some of the selected runs do not exist.")
        return redirect(back)
    if action == "compare":
        if not MIN_RUNS <= len(ids) <= MAX_RUNS:
            raise ValidationFailed(f"Compare takes {MIN_RUNS} to {MAX_RUNS} runs; {len(ids)} are selected.")
        return redirect(f"{reverse('compare')}?runs={','.join(map(str, ids))}")
    if action == "tag":
        count = jobs_tag(jobs=jobs, user=request.user, tag=request.POST.get("tag", ""))
        messages.success(
            request, f"Tagged {count} run{'s' if count != 1 else ''} “{request.POST['tag'].strip()}”."
        )
        return redirect(back)
    if action == "cancel":
        cancelled, refused = 0, []
        for job in jobs:
            was_finished = job.is_finished
            try:
                job = job_cancel(job=job, user=request.user)
            except (Forbidden, Conflict) as exc:
                refused.append(f"{job.pk}: {exc.message}")
                continue
            cancelled += not was_finished and job.status in (JobStatus.CANCELLING, JobStatus.CANCELLED)
        messages.success(
            request, f"Cancelling {cancelled} of {len(jobs)} selected runs (finished runs stay)."
        )
        if refused:
            messages.error(request, "Not cancelled: " + "; ".join(refused[:10]))
        return redirect(back)
    raise ValidationFailed("action: one of compare, cancel, tag.")
