"""Every write to sweeps. The control plane owns each Optuna study; workers never see it.

A sweep asks its study for a trial, runs the trial as an ordinary job, feeds
the pruner from the job's heartbeats and tells the study how the job ended.
Optuna's storage lives in the control plane's database (its own tables) and
is written outside Django's transactions, so neither waits on the other's locks.
A sweep on the ray backend has no study here: see ``raysweeps``.
"""

from __future__ import annotations

import logging
import uuid
from typing import cast

import optuna
from django.db import transaction
from django.db.models import F, FloatField, Q, Sum
from django.utils import timezone

from controlplane.accounts.models import Project, Role, User
from controlplane.accounts.selectors import project_role_check
from controlplane.errors import Conflict, DomainError, ValidationFailed
from controlplane.sweeps import raysweeps, studies
from controlplane.sweeps.models import (
    Backend,
    Direction,
    Pruner,
    Sampler,
    Sweep,
    SweepStatus,
    Trial,
    TrialState,
)
from controlplane.sweeps.space import (
    SearchSpace,
    config_build,
    params_suggest,
    search_space_parse,
)
from controlplane.training.models import Job, JobStatus
from controlplane.training.selectors import base_model_get, dataset_version_get
from controlplane.training.services import job_create, job_transition
from workers.spec import SweepDirection, TrainingConfig

log = logging.getLogger(__name__)

PRUNED = "pruned"  # how a pruned trial's job error starts
MAX_TRIALS = 10_000


# --- creating and steering --------------------------------------------------------


def sweep_create(
    *,
    project: Project,
    user: User,
    name: str,
    base_model_id: int,
    dataset_version_id: int,
    config: TrainingConfig,
    search_space: object,
    objective_metric: str = "train_loss",
    direction: Direction = Direction.MINIMIZE,
    sampler: Sampler = Sampler.TPE,
    pruner: Pruner | None = None,
    n_trials: int = 10,
    parallelism: int = 1,
    gpu_hours_cap: float | None = None,
    seed: int = 0,
    backend: Backend = Backend.OPTUNA,
) -> Sweep:
    """A new sweep, started at once. ``pruner`` None means the backend's usual one:
    the median pruner for Optuna, ASHA (successive halving) for Ray."""
    project_role_check(user=user, project=project, role=Role.MEMBER)
    if pruner is None:
        pruner = raysweeps.RAY_DEFAULT_PRUNER if backend == Backend.RAY else Pruner.MEDIAN
    training_config = config
    base_config = training_config.model_dump(mode="json")
    if (base_config.get("export") or {}).get("merge_adapter"):
        # Every trial would write a whole model; the best one can be merged when it is retrained.
        raise ValidationFailed("A sweep's trials do not export merged models: leave config.export out.")
    space = search_space_parse(search_space, base_config)
    if backend == Backend.RAY:
        raysweeps.ray_settings_check(sampler=sampler, pruner=pruner, gpu_hours_cap=gpu_hours_cap)
        if training_config.resources.launched:
            raise ValidationFailed(
                "A ray sweep's trials train in one process each: leave out cpu_processes and "
                "distributed, and ask for at most 1 GPU per trial."
            )
    if sampler == Sampler.GRID:
        studies.grid(space)
    base_model_get(project=project, base_model_id=base_model_id)
    dataset_version_get(project=project, dataset_version_id=dataset_version_id)

    sweep = Sweep(
        project=project,
        name=(name or "sweep").strip()[:200],
        created_by=user,
        base_model_id=base_model_id,
        dataset_version_id=dataset_version_id,
        base_config=base_config,
        search_space=space.model_dump(mode="json"),
        objective_metric=objective_metric,
        direction=direction,
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        n_trials=n_trials,
        parallelism=parallelism,
        gpu_hours_cap=gpu_hours_cap,
        study_name=f"tuneyard-{uuid.uuid4().hex}",
        backend=backend,
    )
    if backend == Backend.RAY:
        with transaction.atomic():
            sweep.save()
            raysweeps.driver_job_create(sweep=sweep)
        return sweep
    # The study first: a sweep row never points at a study that does not exist.
    # A Direction's values are Optuna's words.
    optuna.create_study(
        study_name=sweep.study_name,
        storage=studies.study_storage(),
        direction=cast(SweepDirection, direction),
    )
    sweep.save()
    transaction.on_commit(lambda: sweep_fill(sweep_id=sweep.pk))
    return sweep


# Ray Tune holds the whole search inside one driver job, which cannot take new budget or pause.
_RAY_STEERING = "a ray sweep runs as one Ray Tune job: it can be stopped, not paused, resumed or extended."


def sweep_status_set(*, sweep: Sweep, user: User, to: SweepStatus) -> Sweep:
    """Pause, resume or stop a sweep. Stopping cancels its running trials. Idempotent."""
    project_role_check(user=user, project=sweep.project, role=Role.MEMBER)
    sweep.refresh_from_db()
    if sweep.status == to:
        return sweep
    if sweep.backend == Backend.RAY and to != SweepStatus.STOPPED:
        raise ValidationFailed(_RAY_STEERING)
    if SweepStatus(sweep.status).is_finished():
        raise Conflict(f"Sweep {sweep.pk} has {sweep.status}; add trials to go on.")
    Sweep.objects.filter(pk=sweep.pk, status=sweep.status).update(
        status=to, stop_reason=f"stopped by {user.username}" if to == SweepStatus.STOPPED else ""
    )
    if to == SweepStatus.STOPPED:
        _trials_cancel(sweep, reason=f"its sweep was stopped by {user.username}")
    elif to == SweepStatus.RUNNING:
        transaction.on_commit(lambda: sweep_fill(sweep_id=sweep.pk))
    sweep.refresh_from_db()
    return sweep


def sweep_trials_add(*, sweep: Sweep, user: User, count: int) -> Sweep:
    """Raise the budget by ``count`` trials; a finished sweep runs again."""
    project_role_check(user=user, project=sweep.project, role=Role.MEMBER)
    if sweep.backend == Backend.RAY:
        raise ValidationFailed(_RAY_STEERING)
    if not 1 <= count <= MAX_TRIALS:
        raise ValidationFailed(f"'count' is between 1 and {MAX_TRIALS}.")
    Sweep.objects.filter(pk=sweep.pk).update(n_trials=F("n_trials") + count)
    Sweep.objects.filter(pk=sweep.pk, status=SweepStatus.FINISHED).update(status=SweepStatus.RUNNING)
    transaction.on_commit(lambda: sweep_fill(sweep_id=sweep.pk))
    sweep.refresh_from_db()
    return sweep


def sweep_failed_rerun(*, sweep: Sweep, user: User) -> int:
    """Run each failed trial's parameters again as a new trial (the budget grows to match)."""
    project_role_check(user=user, project=sweep.project, role=Role.MEMBER)
    if sweep.backend == Backend.RAY:
        raise ValidationFailed(_RAY_STEERING)
    failed = list(sweep.trials.filter(state=TrialState.FAILED, rerun=False))
    if not failed:
        return 0
    study = studies.study_load(sweep)
    for trial in failed:
        study.enqueue_trial(trial.params, skip_if_exists=False)
    Trial.objects.filter(pk__in=[t.pk for t in failed]).update(rerun=True)
    sweep_trials_add(sweep=sweep, user=user, count=len(failed))
    return len(failed)


# --- the trial loop ---------------------------------------------------------------


def sweep_fill(*, sweep_id: int) -> int:
    """Launch trials until the sweep's parallelism or budget is reached; return how many.

    Safe to call from anywhere, any number of times: each step holds the sweep's
    row lock from counting its running trials until the new trial is committed,
    so neither the budget nor the parallelism is overrun, and the sweep is never
    marked finished while a trial is still being launched.
    """
    launched = 0
    while _fill_step(sweep_id):
        launched += 1
    return launched


def _fill_step(sweep_id: int) -> bool:
    """Launch one trial if the sweep has room; finish or stop it when it should. True if launched."""
    with transaction.atomic():
        sweep = Sweep.objects.select_for_update().filter(pk=sweep_id).first()
        # A Ray sweep's driver launches its own trials.
        if sweep is None or sweep.status != SweepStatus.RUNNING or sweep.backend != Backend.OPTUNA:
            return False
        reason = _cap_reason(sweep)
        if reason:
            Sweep.objects.filter(pk=sweep_id).update(status=SweepStatus.STOPPED, stop_reason=reason)
            _trials_cancel(sweep, reason=f"its sweep stopped: {reason}")
            return False
        active = sweep.trials.filter(state=TrialState.RUNNING).count()
        slot = sweep.trials_launched
        if slot >= sweep.n_trials:
            if active == 0:
                Sweep.objects.filter(pk=sweep_id).update(
                    status=SweepStatus.FINISHED, stop_reason=f"its budget of {sweep.n_trials} trials is spent"
                )
            return False
        if active >= sweep.parallelism:
            return False
        Sweep.objects.filter(pk=sweep_id).update(trials_launched=slot + 1)
        return _trial_launch(sweep, slot)


def _trial_launch(sweep: Sweep, slot: int) -> bool:
    study = studies.study_load(sweep, seed_offset=slot)
    trial = study.ask()
    space = SearchSpace.model_validate(sweep.search_space)
    try:
        params = params_suggest(trial, space, sweep.base_config["method"]["name"])
        config = config_build(sweep.base_config, params, space)
        with transaction.atomic():
            job = job_create(
                project=sweep.project,
                user=sweep.created_by,
                base_model_id=sweep.base_model_id,
                dataset_version_id=sweep.dataset_version_id,
                config=TrainingConfig.model_validate(config),
                name=f"{sweep.name} · trial {trial.number}",
            )
            Trial.objects.create(
                sweep=sweep,
                number=trial.number,
                optuna_trial_id=studies.trial_id(sweep, trial.number),
                job=job,
                params=params,
            )
    except DomainError as exc:
        # The sweep cannot go on as it is (its creator left the project, a base model went away).
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        Sweep.objects.filter(pk=sweep.pk, status=SweepStatus.RUNNING).update(
            status=SweepStatus.STOPPED, stop_reason=f"a trial could not be launched: {exc.message}"[:300]
        )
        return False
    return True


def _cap_reason(sweep: Sweep) -> str:
    if sweep.gpu_hours_cap is None:
        return ""
    jobs = Job.objects.filter(trial__sweep=sweep)
    finished = jobs.aggregate(s=Sum(F("gpus") * F("run_seconds"), output_field=FloatField()))["s"] or 0.0
    now = timezone.now()
    running = sum(
        gpus * (now - started).total_seconds()
        for gpus, started in jobs.filter(status__in=[JobStatus.RUNNING, JobStatus.CANCELLING])
        .exclude(started_at=None)
        .values_list("gpus", "started_at")
        if started is not None  # always: excluded above
    )
    used = (finished + running) / 3600
    if used >= sweep.gpu_hours_cap:
        return f"its cap of {sweep.gpu_hours_cap:g} GPU-hours is reached ({used:.2f} used)"
    return ""


def _trials_cancel(sweep: Sweep, *, reason: str) -> None:
    jobs = Job.objects.filter(Q(trial__sweep=sweep) | Q(driven_sweep=sweep))
    for job_id, status, attempt in jobs.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).values_list(
        "pk", "status", "attempt"
    ):
        if status == JobStatus.QUEUED:
            job_transition(job_id=job_id, attempt=attempt, to=JobStatus.CANCELLED, actor_label="sweep",
                           message=reason, finished_at=timezone.now(), error=reason)  # fmt: skip
        else:
            job_transition(job_id=job_id, attempt=attempt, to=JobStatus.CANCELLING, actor_label="sweep",
                           message=reason)  # fmt: skip


def trial_report(*, job_id: int, points: list[tuple[int, float]], step: int = 0, total_steps: int = 0) -> str:
    """Feed a running trial's intermediate values to the pruner; the reason to stop it, or "".

    A trial that has reached its last step (``step`` of ``total_steps``, or a point at it) is never
    pruned: its compute is spent, and stopping it would only throw away its final metrics, the
    value the study needs. It ends as it would have and is told to the study as complete.
    """
    trial = Trial.objects.select_related("sweep").filter(job_id=job_id, state=TrialState.RUNNING).first()
    if trial is None or not points:
        return ""
    # Always: only an Optuna sweep's trials have jobs of their own, and each has its Optuna trial.
    assert trial.optuna_trial_id is not None
    study = studies.study_load(trial.sweep)
    live = optuna.Trial(study, trial.optuna_trial_id)
    reported = studies.study_storage().get_trial(trial.optuna_trial_id).intermediate_values
    for step, value in points:
        if step not in reported:  # a resent heartbeat repeats points
            live.report(value, step)
    reached = max(step, *(s for s, _ in points))
    if total_steps and reached >= total_steps:
        return ""
    if trial.sweep.pruner != Pruner.NONE and live.should_prune():
        return f"{PRUNED} by the sweep's {trial.sweep.pruner} pruner at step {reached}"
    return ""


def trial_finish(*, job_id: int) -> int:
    """Tell the study how a trial's job ended, then launch what the sweep has room for; how many."""
    trial = (
        Trial.objects.select_related("sweep", "job").filter(job_id=job_id, state=TrialState.RUNNING).first()
    )
    if trial is None or trial.job is None or not JobStatus(trial.job.status).is_finished():
        return 0
    job, sweep = trial.job, trial.sweep
    value = None
    if job.status == JobStatus.SUCCEEDED and job.metrics.get(sweep.objective_metric) is not None:
        state, value = TrialState.COMPLETE, float(job.metrics[sweep.objective_metric])
    elif job.status == JobStatus.CANCELLED and job.error.startswith(PRUNED):
        state = TrialState.PRUNED
    else:
        state = TrialState.FAILED
    optuna_state = {
        TrialState.COMPLETE: optuna.trial.TrialState.COMPLETE,
        TrialState.PRUNED: optuna.trial.TrialState.PRUNED,
        TrialState.FAILED: optuna.trial.TrialState.FAIL,
    }[state]
    studies.study_load(sweep).tell(trial.number, value, state=optuna_state, skip_if_finished=True)
    Trial.objects.filter(pk=trial.pk, state=TrialState.RUNNING).update(state=state, value=value)
    return sweep_fill(sweep_id=sweep.pk)


def sweeps_reconcile() -> int:
    """Catch up after a lost hook or a restart: tell the study of trials whose job ended, then fill.

    Returns how many trials it launched.
    """
    raysweeps.drivers_reconcile()
    finished = [status for status in JobStatus if status.is_finished()]
    ended = Trial.objects.filter(state=TrialState.RUNNING, job__status__in=finished)
    launched = sum(trial_finish(job_id=job_id) for job_id in ended.values_list("job_id", flat=True))
    running = Sweep.objects.filter(status=SweepStatus.RUNNING, backend=Backend.OPTUNA)
    return launched + sum(sweep_fill(sweep_id=pk) for pk in running.values_list("pk", flat=True))
