"""Pages of suites and gates: a model's suites (write, version, run) and gate policies, a suite run,
and the per-row predictions of one of its tasks."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from controlplane.accounts.models import Project, Role
from controlplane.accounts.requests import AuthenticatedHttpRequest
from controlplane.accounts.selectors import membership_role, project_get
from controlplane.errors import DomainError, NotFound, ValidationFailed, page_errors
from controlplane.evidence import gates, suite_results, suites
from controlplane.evidence.models import GatePolicy, Suite, SuiteRun
from controlplane.registry.models import ModelVersion, Target

# A JSON field of a form is bounded before it is parsed (20 tasks fit in far less).
JSON_FIELD_MAX = 200_000
PREDICTIONS_PAGE = 50

TASKS_EXAMPLE = [
    {
        "name": "quiz",
        "dataset_version": 1,
        "evaluation": {"metrics": ["multiple_choice"], "num_fewshot": 0},
    }
]


def _json_field(request: AuthenticatedHttpRequest, name: str) -> Any:
    text = request.POST.get(name, "")
    if len(text) > JSON_FIELD_MAX:
        raise ValidationFailed(f"{name}: at most {JSON_FIELD_MAX} characters.")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(
            f"{name}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})."
        ) from exc


def _seed(request: AuthenticatedHttpRequest) -> int | None:
    raw = request.POST.get("seed", "").strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10):
        raise ValidationFailed("seed: a whole number from 0 to 4294967295.")
    return int(raw)


def _roles(request: AuthenticatedHttpRequest, project: Project) -> dict[str, bool]:
    role = membership_role(user=request.user, project=project)
    return {
        "can_edit": role is not None and role.includes(Role.MEMBER),
        "can_approve": role is not None and role.includes(Role.APPROVER),
    }


def _model_check(project: Project, model_name: str) -> list[ModelVersion]:
    versions = list(ModelVersion.objects.filter(project=project, name=model_name).order_by("-version"))
    if not versions:
        raise NotFound("Not found.")
    return versions


def _suite_of_project(request: AuthenticatedHttpRequest, slug: str, suite_id: int) -> Suite:
    suite = suites.suite_get(user=request.user, suite_id=suite_id)
    if suite.project.slug != slug:
        raise NotFound("Not found.")
    return suite


@login_required
@page_errors
def model_suites(request: AuthenticatedHttpRequest, slug: str, name: str) -> HttpResponse:
    """A registered model's suites (each version, its tasks, its runs) and its gate per target."""
    project = project_get(user=request.user, slug=slug)
    versions = _model_check(project, name)
    current = suites.suites_current(project=project, model_name=name)
    runs = SuiteRun.objects.filter(suite__in=[s.pk for s in current]).select_related("model_version")
    runs_of: dict[int, list[SuiteRun]] = {}
    for run in runs.order_by("-model_version__version", "-pk"):
        runs_of.setdefault(run.suite_id, []).append(run)
    policies = {p.target: p for p in GatePolicy.objects.filter(project=project, model_name=name)}
    return render(
        request,
        "evidence/suites.html",
        {
            "project": project,
            "name": name,
            "versions": versions,
            "suites": [
                {
                    "suite": suite,
                    "tasks_json": json.dumps(suite.tasks, indent=2),
                    "history": suites.suite_list(project=project, model_name=name).filter(name=suite.name),
                    "runs": runs_of.get(suite.pk, []),
                }
                for suite in current
            ],
            "gates": [
                {
                    "target": target,
                    "policy": policies.get(target),
                    "rules_json": json.dumps(policies[target].rules, indent=2)
                    if target in policies
                    else "[]",
                    "changes": list(policies[target].changes.select_related("actor").order_by("-at")[:5])
                    if target in policies
                    else [],
                }
                for target in Target.values
            ],
            "tasks_example": json.dumps(TASKS_EXAMPLE, indent=2),
            **_roles(request, project),
        },
    )


def _back_to_suites(request: AuthenticatedHttpRequest, slug: str, name: str) -> HttpResponse | None:
    """A form's URL opened (or come back to after a refusal, which returns to where the form was
    sent from when the browser keeps no referrer) leads to the suites page instead of a 405."""
    return None if request.method == "POST" else redirect("model-suites", slug=slug, name=name)


@login_required
@page_errors
def suite_new(request: AuthenticatedHttpRequest, slug: str, name: str) -> HttpResponse:
    project = project_get(user=request.user, slug=slug)
    if (back := _back_to_suites(request, slug, name)) is not None:
        return back
    suite = suites.suite_create(
        project=project,
        user=request.user,
        model_name=name,
        name=request.POST.get("name", "").strip(),
        tasks=_json_field(request, "tasks"),
        seed=_seed(request) if request.POST.get("seed", "").strip() else 1234,
    )
    messages.success(request, f"Suite {suite.name} v{suite.version} written.")
    return redirect("model-suites", slug=slug, name=name)


@login_required
@page_errors
def suite_version_new(request: AuthenticatedHttpRequest, slug: str, suite_id: int) -> HttpResponse:
    suite = _suite_of_project(request, slug, suite_id)
    if (back := _back_to_suites(request, slug, suite.model_name)) is not None:
        return back
    new = suites.suite_version_create(
        suite=suite, user=request.user, tasks=_json_field(request, "tasks"), seed=_seed(request)
    )
    messages.success(request, f"Suite {new.name} v{new.version} written; earlier versions stay as they were.")
    return redirect("model-suites", slug=slug, name=suite.model_name)


@login_required
@page_errors
def suite_run_new(request: AuthenticatedHttpRequest, slug: str, suite_id: int) -> HttpResponse:
    suite = _suite_of_project(request, slug, suite_id)
    if (back := _back_to_suites(request, slug, suite.model_name)) is not None:
        return back
    raw = request.POST.get("model_version", "")
    if not (raw.isascii() and raw.isdigit() and len(raw) < 19):
        raise ValidationFailed("Choose a version to run the suite on.")
    version = ModelVersion.objects.filter(pk=int(raw), project=suite.project, name=suite.model_name).first()
    if version is None:
        raise ValidationFailed(f"Choose a version of {suite.model_name}.")
    run, created = suites.suite_run_request(suite=suite, model_version=version, user=request.user)
    if created:
        messages.success(
            request, f"Suite {suite.name} runs on {version}: {run.task_jobs.count()} jobs queued."
        )
    else:
        messages.info(
            request,
            f"{version} has run {suite.name} v{suite.version} already ({run.status}): no job started.",
        )
    return redirect("suite-run", slug=slug, suite_run_id=run.pk)


@login_required
@page_errors
def gate_policy_edit(request: AuthenticatedHttpRequest, slug: str, name: str, target: str) -> HttpResponse:
    project = project_get(user=request.user, slug=slug)
    _model_check(project, name)
    if (back := _back_to_suites(request, slug, name)) is not None:
        return back
    gates.gate_policy_set(
        project=project,
        user=request.user,
        model_name=name,
        target=target,
        rules=_json_field(request, "rules"),
    )
    messages.success(request, f"The gate of {name} to {target} is saved.")
    return redirect(f"{reverse('model-suites', args=[slug, name])}#gate-{target}")


@login_required
@page_errors
def suite_run_detail(request: AuthenticatedHttpRequest, slug: str, suite_run_id: int) -> HttpResponse:
    run = suites.suite_run_get(user=request.user, suite_run_id=suite_run_id)
    if run.suite.project.slug != slug:
        raise NotFound("Not found.")
    links = list(run.task_jobs.select_related("job").order_by("task"))
    return render(
        request,
        "evidence/suite_run.html",
        {
            "project": run.suite.project,
            "run": run,
            "tasks": [
                {
                    "link": link,
                    "metrics": sorted((run.results.get(link.task) or link.job.metrics or {}).items()),
                }
                for link in links
            ],
        },
    )


@login_required
@page_errors
def suite_run_predictions(
    request: AuthenticatedHttpRequest, slug: str, suite_run_id: int, task: str
) -> HttpResponse:
    """A task's per-row predictions, right or wrong, a page at a time."""
    run = suites.suite_run_get(user=request.user, suite_run_id=suite_run_id)
    if run.suite.project.slug != slug:
        raise NotFound("Not found.")
    only = request.GET.get("filter", "all")
    if only not in suite_results.PREDICTION_FILTERS:
        only = "all"
    raw = request.GET.get("page", "1")
    page = int(raw) if raw.isascii() and raw.isdigit() and 0 < len(raw) < 7 else 1
    problem = ""
    try:
        rows = suite_results.task_predictions(run=run, task=task, only=only)
    except NotFound:
        raise
    except DomainError as exc:
        # Shown here: sent back to this same page, a refusal would only come round again.
        rows, problem = [], exc.message
    pages = max(1, -(-len(rows) // PREDICTIONS_PAGE))
    page = min(max(page, 1), pages)
    return render(
        request,
        "evidence/suite_predictions.html",
        {
            "project": run.suite.project,
            "run": run,
            "task": task,
            "filter": only,
            "filters": suite_results.PREDICTION_FILTERS,
            "rows": rows[(page - 1) * PREDICTIONS_PAGE : page * PREDICTIONS_PAGE],
            "count": len(rows),
            "page": page,
            "pages": pages,
            "problem": problem,
        },
    )
