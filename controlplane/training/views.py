"""Pages of training: launch, a job's page and its live part, cancel, retry, clone, workers."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from controlplane import tracking
from controlplane.accounts.models import Role
from controlplane.accounts.requests import AuthenticatedHttpRequest
from controlplane.accounts.selectors import membership_role, project_get
from controlplane.datasets.selectors import contamination_checks
from controlplane.errors import ServiceUnavailable, ValidationFailed, page_errors
from controlplane.training import selectors, services
from controlplane.training.forms import EvaluateLaunchForm, JobLaunchForm


@login_required
@page_errors
def job_new(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    project = project_get(user=request.user, slug=slug, role=Role.MEMBER)
    form = JobLaunchForm(request.POST or None, project=project)
    if request.method == "POST" and form.is_valid():
        job = services.job_create(
            project=project,
            user=request.user,
            base_model_id=form.cleaned_data["base_model"].pk,
            dataset_version_id=form.cleaned_data["dataset_version"].pk,
            config=form.config(),
            name=form.cleaned_data["name"],
            priority=form.cleaned_data["priority"],
        )
        messages.success(request, f"Job {job.pk} is queued.")
        return redirect("job", job_id=job.pk)
    return render(
        request,
        "job_new.html",
        {"project": project, "form": form, "contamination": contamination_checks(project=project)},
    )


@login_required
@page_errors
def evaluate_new(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    """Launch an evaluate job; ``?source_job=N`` chooses the finetune to evaluate."""
    project = project_get(user=request.user, slug=slug, role=Role.MEMBER)
    initial = {"source_job": request.GET.get("source_job")} if request.GET.get("source_job") else {}
    form = EvaluateLaunchForm(request.POST or None, project=project, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            job = services.evaluate_job_create(
                project=project,
                user=request.user,
                dataset_version_id=data["dataset_version"].pk,
                base_model_id=data["base_model"].pk if data["base_model"] else None,
                source_job_id=data["source_job"].pk if data["source_job"] else None,
                fewshot_dataset_version_id=(
                    data["fewshot_dataset_version"].pk if data["fewshot_dataset_version"] else None
                ),
                config=form.config(),
                name=data["name"],
                priority=data["priority"],
            )
        except ValidationFailed as exc:
            # Shown on the form, which keeps what was typed, rather than as a redirect's message.
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Job {job.pk} is queued.")
            return redirect("job", job_id=job.pk)
    return render(request, "evaluate_new.html", {"project": project, "form": form})


@login_required
@require_POST
@page_errors
def job_estimate(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    """The launch form's estimate, as a fragment the page swaps in; an input it cannot take is said there."""
    project = project_get(user=request.user, slug=slug, role=Role.MEMBER)
    form = JobLaunchForm(request.POST, project=project)
    context: dict = {"form": form}
    if form.is_valid():
        try:
            context["estimate"] = selectors.job_estimate(
                project=project,
                user=request.user,
                base_model_id=form.cleaned_data["base_model"].pk,
                dataset_version_id=form.cleaned_data["dataset_version"].pk,
                config=form.config(),
            )
        except ValidationFailed as exc:
            context["error"] = exc.message
    return render(request, "_job_estimate.html", context)


def _job_context(request: AuthenticatedHttpRequest, job_id: int) -> dict:
    job = selectors.job_get(user=request.user, job_id=job_id)
    role = membership_role(user=request.user, project=job.project)
    position = selectors.job_queue_position(job=job)
    return {
        "job": job,
        "project": job.project,
        "can_edit": role is not None and role.includes(Role.MEMBER),
        "log_lines": selectors.job_log_tail(job=job, limit=50),
        "queue_position": position,
        "start_estimate": selectors.job_start_estimate(job=job, position=position),
    }


@login_required
@page_errors
def job_detail(request: AuthenticatedHttpRequest, job_id: int) -> HttpResponse:
    context = _job_context(request, job_id)
    job = context["job"]
    context["events"] = job.events.select_related("actor")
    context["model_versions"] = job.model_versions.all()
    context["mlflow_url"] = ""
    if job.mlflow_run_id:
        try:
            context["mlflow_url"] = tracking.run_url(job.mlflow_run_id)
        except ServiceUnavailable:
            messages.warning(request, "MLflow did not answer; the run link is missing.")
    return render(request, "job_detail.html", context)


@login_required
@page_errors
def job_live(request: AuthenticatedHttpRequest, job_id: int) -> HttpResponse:
    """The part of the job page htmx refreshes while the job runs."""
    context = _job_context(request, job_id)
    response = render(request, "_job_live.html", context)
    if context["job"].is_finished:
        # Reload the whole page once, so the links that exist only at the end appear.
        response["HX-Refresh"] = "true"
    return response


@login_required
@require_POST
@page_errors
def project_dispatch(request: AuthenticatedHttpRequest, slug: str, paused: bool) -> HttpResponse:
    project = project_get(user=request.user, slug=slug)
    project = services.project_dispatch_pause(project=project, user=request.user, paused=paused)
    state = "paused: queued jobs are held" if project.dispatch_paused else "resumed"
    messages.info(request, f"Dispatch of {project.slug} is {state}.")
    return redirect("project", slug=project.slug)


@login_required
@require_POST
@page_errors
def job_cancel(request: AuthenticatedHttpRequest, job_id: int) -> HttpResponse:
    job = selectors.job_get(user=request.user, job_id=job_id)
    job = services.job_cancel(job=job, user=request.user)
    messages.info(request, f"Job {job.pk} is {job.status}.")
    return redirect("job", job_id=job.pk)


@login_required
@require_POST
@page_errors
def job_retry(request: AuthenticatedHttpRequest, job_id: int) -> HttpResponse:
    job = selectors.job_get(user=request.user, job_id=job_id)
    job = services.job_retry(job=job, user=request.user)
    messages.info(request, f"Job {job.pk} is {job.status} (attempt {job.attempt}).")
    return redirect("job", job_id=job.pk)


@login_required
@require_POST
@page_errors
def job_clone(request: AuthenticatedHttpRequest, job_id: int) -> HttpResponse:
    job = selectors.job_get(user=request.user, job_id=job_id)
    clone = services.job_clone(job=job, user=request.user)
    messages.success(request, f"Job {clone.pk} is a clone of job {job.pk}, queued.")
    return redirect("job", job_id=clone.pk)


@login_required
@page_errors
def worker_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    return render(request, "workers.html", {"rows": selectors.worker_list(user=request.user)})
