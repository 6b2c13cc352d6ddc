"""Pages of training: launch, a job's page and its live part, cancel, retry, clone, workers."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST
from pydantic import ValidationError as PydanticValidationError

from controlplane import tracking
from controlplane.accounts.models import Project, Role
from controlplane.accounts.requests import AuthenticatedHttpRequest
from controlplane.accounts.selectors import membership_role, project_get
from controlplane.datasets.selectors import contamination_checks
from controlplane.errors import Conflict, NotFound, ServiceUnavailable, ValidationFailed, page_errors
from controlplane.training import selectors, services, waiting
from controlplane.training.forms import EvaluateLaunchForm, JobLaunchForm
from controlplane.training.models import Job, JobKind, JobStatus


def _clone_source(request: AuthenticatedHttpRequest, project: Project) -> Job | None:
    """The job ``?from=N`` names, to fill a launch form in from; None, said in a message, when the
    project has no such job (another project's job reads as unknown: nothing of it shows)."""
    raw = request.GET.get("from", "")
    if request.method != "GET" or not raw:
        return None
    job = None
    if raw.isdigit() and len(raw) <= 12:
        try:
            job = selectors.job_get(user=request.user, job_id=int(raw))
        except NotFound:
            job = None
    if job is None or job.project_id != project.pk:
        messages.error(
            request, f"Project {project.slug} has no job {raw[:20]} to copy; the form starts empty."
        )
        return None
    return job


def _launch_page(slug: str, kind: str, job: Job) -> HttpResponse:
    name = "evaluate-new" if kind == JobKind.EVALUATE else "job-new"
    return redirect(f"{reverse(name, args=[slug])}?from={job.pk}")


@login_required
@page_errors
def job_new(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    """The fine-tune form; ``?from=N`` fills it in from job N (clone and edit). A refusal, of the
    form or of the service, shows the form again as it was typed, each error beside its field."""
    project = project_get(user=request.user, slug=slug, role=Role.MEMBER)
    source = _clone_source(request, project)
    if source is not None and source.kind == JobKind.EVALUATE:
        return _launch_page(project.slug, JobKind.EVALUATE, source)
    initial = {}
    if source is not None:
        try:
            initial = JobLaunchForm.initial_from(source)
        except PydanticValidationError:
            # A config stored under an older contract; the person fills the form in instead.
            messages.error(request, f"Job {source.pk}'s config no longer fits the form; it starts empty.")
            source = None
    form = JobLaunchForm(request.POST or None, project=project, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            job = services.job_create(
                project=project,
                user=request.user,
                base_model_id=form.cleaned_data["base_model"].pk,
                dataset_version_id=form.cleaned_data["dataset_version"].pk,
                config=form.config(),
                name=form.cleaned_data["name"],
                priority=form.cleaned_data["priority"],
            )
        except (ValidationFailed, Conflict) as exc:
            form.add_contract_error(exc)
        else:
            messages.success(request, f"Job {job.pk} is queued.")
            for warning in job.preflight_warnings:
                messages.warning(request, warning[:1].upper() + warning[1:])
            return redirect("job", job_id=job.pk)
    return render(
        request,
        "job_new.html",
        {
            "project": project,
            "form": form,
            "source": source,
            "contamination": contamination_checks(project=project),
        },
    )


@login_required
@page_errors
def evaluate_new(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    """Launch an evaluate job; ``?source_job=N`` chooses the finetune to evaluate, ``?from=N``
    fills the form in from evaluate job N (clone and edit)."""
    project = project_get(user=request.user, slug=slug, role=Role.MEMBER)
    source = _clone_source(request, project)
    if source is not None and source.kind != JobKind.EVALUATE:
        return _launch_page(project.slug, source.kind, source)
    initial = {"source_job": request.GET.get("source_job")} if request.GET.get("source_job") else {}
    if source is not None and source.is_judge:
        # Its pairs are two evaluations' answers, which only its suite collects.
        messages.error(request, f"Job {source.pk} is a judge job, run by its suite; the form starts empty.")
        source = None
    if source is not None:
        try:
            initial = EvaluateLaunchForm.initial_from(source)
        except PydanticValidationError:
            messages.error(request, f"Job {source.pk}'s config no longer fits the form; it starts empty.")
            source = None
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
        except (ValidationFailed, Conflict) as exc:
            # Shown on the form, which keeps what was typed, rather than as a redirect's message.
            form.add_service_error(exc)
        else:
            messages.success(request, f"Job {job.pk} is queued.")
            return redirect("job", job_id=job.pk)
    return render(request, "evaluate_new.html", {"project": project, "form": form, "source": source})


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
            form.add_contract_error(exc)
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
        "waiting_reason": waiting.job_waiting_reason(job=job) if position else "",
    }


def _job_progress_context(context: dict) -> None:
    """What the live panel shows beyond the row: its history, and its run time so far."""
    job = context["job"]
    context["events"] = job.events.select_related("actor")
    run_seconds = job.run_seconds
    if job.status in (JobStatus.RUNNING, JobStatus.CANCELLING) and job.started_at is not None:
        # run_seconds grows only when an attempt ends: add the running attempt's time so far.
        run_seconds += max(0.0, (timezone.now() - job.started_at).total_seconds())
    context["run_seconds"] = run_seconds
    context["gpu_hours"] = job.gpus * run_seconds / 3600


@login_required
@page_errors
def job_detail(request: AuthenticatedHttpRequest, job_id: int) -> HttpResponse:
    context = _job_context(request, job_id)
    job = context["job"]
    _job_progress_context(context)
    context["model_versions"] = job.model_versions.all()
    evaluations = job.evaluations.select_related("dataset_version__dataset")
    context["evaluations"] = evaluations.order_by("-created_at")
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
    _job_progress_context(context)
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
@page_errors
def job_clone(request: AuthenticatedHttpRequest, job_id: int) -> HttpResponse:
    """Clone and edit: the launch form, filled in from the job. Nothing runs until it is submitted
    (the API's clone, for scripts, launches at once)."""
    job = selectors.job_get(user=request.user, job_id=job_id, role=Role.MEMBER)
    return _launch_page(job.project.slug, job.kind, job)


@login_required
@page_errors
def worker_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    # Opened from a project's navigation (?project=slug), the page keeps that project's sections.
    slug = request.GET.get("project")
    project = project_get(user=request.user, slug=slug) if slug else None
    return render(
        request, "workers.html", {"rows": selectors.worker_list(user=request.user), "project": project}
    )
