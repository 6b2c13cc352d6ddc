"""Pages of sweeps: launch, watch live, pause, resume, stop, add or rerun trials."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from controlplane.accounts.models import Role
from controlplane.accounts.requests import AuthenticatedHttpRequest
from controlplane.accounts.selectors import membership_role, project_get
from controlplane.errors import ValidationFailed, page_errors
from controlplane.sweeps import selectors, services
from controlplane.sweeps.forms import PRUNER_LABELS, SAMPLER_LABELS, SweepLaunchForm
from controlplane.sweeps.models import Backend, Direction, Pruner, Sampler, SweepStatus, TrialState


@login_required
@page_errors
def sweep_new(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    project = project_get(user=request.user, slug=slug, role=Role.MEMBER)
    form = SweepLaunchForm(request.POST or None, project=project)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            sweep = services.sweep_create(
                project=project,
                user=request.user,
                name=data["name"],
                base_model_id=data["base_model"].pk,
                dataset_version_id=data["dataset_version"].pk,
                config=form.config(),
                search_space=data["search_space"],
                objective_metric=data["objective_metric"],
                direction=Direction(data["direction"]),
                sampler=Sampler(data["sampler"]),
                pruner=Pruner(data["pruner"]) if data["pruner"] else None,
                n_trials=data["n_trials"],
                parallelism=data["parallelism"],
                gpu_hours_cap=data["gpu_hours_cap"],
                seed=data["seed"],
                backend=Backend(data["backend"] or Backend.OPTUNA),
            )
        except ValidationFailed as exc:
            form.add_error(None, exc.message)  # shown on the form, with what was typed kept
        else:
            return redirect("sweep", sweep_id=sweep.pk)
    return render(request, "sweep_new.html", {"project": project, "form": form})


def _context(request: AuthenticatedHttpRequest, sweep_id: int) -> dict:
    sweep = selectors.sweep_get(user=request.user, sweep_id=sweep_id)
    role = membership_role(user=request.user, project=sweep.project)
    trials = selectors.sweep_trials(sweep=sweep)
    return {
        "sweep": sweep,
        "project": sweep.project,
        "trials": trials,
        "best": selectors.sweep_best_trial(sweep=sweep),
        "compare_ids": selectors.sweep_best_job_ids(sweep=sweep, limit=10),
        "has_failed": any(t.state == TrialState.FAILED and not t.rerun for t in trials),
        "figures": selectors.sweep_figures(sweep=sweep),
        "chart_names": selectors.CHARTS,
        "sampler_label": SAMPLER_LABELS[Sampler(sweep.sampler)],
        "pruner_label": PRUNER_LABELS[Pruner(sweep.pruner)],
        "live": sweep.status in (SweepStatus.RUNNING, SweepStatus.PAUSED),
        "refresh_seconds": settings.SWEEP_REFRESH_SECONDS,
        "can_edit": role is not None and role.includes(Role.MEMBER),
    }


@login_required
@page_errors
def sweep_detail(request: AuthenticatedHttpRequest, sweep_id: int) -> HttpResponse:
    return render(request, "sweep_detail.html", _context(request, sweep_id))


@login_required
@page_errors
def sweep_live(request: AuthenticatedHttpRequest, sweep_id: int) -> HttpResponse:
    """The trials table and the charts' data, refreshed by htmx while the sweep runs; the heading's
    actions come along out of band, so Pause and Stop go when the sweep ends."""
    return render(request, "_sweep_live.html", _context(request, sweep_id) | {"oob": True})


@login_required
@require_POST
@page_errors
def sweep_action(request: AuthenticatedHttpRequest, sweep_id: int, action: str) -> HttpResponse:
    sweep = selectors.sweep_get(user=request.user, sweep_id=sweep_id)
    if action == "add-trials":
        count = request.POST.get("count", "")
        added = int(count) if count.isascii() and count.isdigit() else 0
        services.sweep_trials_add(sweep=sweep, user=request.user, count=added)
        messages.success(request, f"{added} trial(s) added.")
    elif action == "rerun-failed":
        messages.success(
            request, f"{services.sweep_failed_rerun(sweep=sweep, user=request.user)} trial(s) rerun."
        )
    else:
        to = {"pause": SweepStatus.PAUSED, "resume": SweepStatus.RUNNING, "stop": SweepStatus.STOPPED}[action]
        sweep = services.sweep_status_set(sweep=sweep, user=request.user, to=to)
        messages.info(request, f"The sweep is {sweep.status}.")
    return redirect("sweep", sweep_id=sweep_id)
