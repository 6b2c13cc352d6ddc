"""Every write to Ray sweeps: one driver job runs Ray Tune and reports its trials back.

A Ray sweep has no study in the control plane. Its driver job (an ordinary job
of kind ``sweep-driver``) carries the whole search; the driver reports each
trial over the internal API, and the trial's row here is what the sweep's page
and API show. The driver job's lifecycle is the sweep's: stopping the sweep
cancels it, and its end finishes or stops the sweep.
"""

from __future__ import annotations

import logging
from typing import cast

from django.db import IntegrityError, transaction
from django.db.models import F

from controlplane.errors import Conflict, NotFound, ValidationFailed
from controlplane.sweeps.models import Direction, Pruner, Sampler, Sweep, SweepStatus, Trial, TrialState
from controlplane.training.models import Job, JobKind, JobStatus
from controlplane.training.services import job_create
from workers.spec import (
    RaySampler,
    RayScheduler,
    RaySweep,
    SweepDirection,
    SweepTrialReport,
    SweepTrialState,
    TrainingConfig,
)

log = logging.getLogger(__name__)

# Ray Tune's searcher is Optuna's, so these samplers mean the same there; the others
# (grid, CMA-ES, QMC) need the whole study at once or have no Ray equivalent we test.
RAY_SAMPLERS = (Sampler.TPE, Sampler.RANDOM)
# Ray schedules trials with ASHA (asynchronous successive halving) or lets them all run.
RAY_PRUNERS: dict[Pruner, RayScheduler] = {Pruner.SUCCESSIVE_HALVING: "asha", Pruner.NONE: "fifo"}
RAY_DEFAULT_PRUNER = Pruner.SUCCESSIVE_HALVING


def ray_settings_check(*, sampler: str, pruner: str, gpu_hours_cap: float | None) -> None:
    """Refuse what a Ray sweep cannot honour, rather than silently running something else."""
    if sampler not in RAY_SAMPLERS:
        raise ValidationFailed(
            f"a ray sweep samples with {' or '.join(RAY_SAMPLERS)} (Optuna's, inside Ray Tune), "
            f"not {sampler!r}."
        )
    if pruner not in RAY_PRUNERS:
        raise ValidationFailed(
            f"a ray sweep's pruner is {Pruner.SUCCESSIVE_HALVING!r} (Ray's ASHA scheduler) or "
            f"{Pruner.NONE!r}, not {pruner!r}."
        )
    if gpu_hours_cap is not None:
        # The trials' GPU time is spent on the Ray cluster, which the control plane does not see.
        raise ValidationFailed(
            "a ray sweep takes no 'gpu_hours_cap': its trials' GPUs are the Ray cluster's."
        )


def driver_job_create(*, sweep: Sweep) -> Job:
    """The sweep's one job; call inside the transaction that saves the sweep (it dispatches on commit)."""
    job = job_create(
        kind=JobKind.SWEEP_DRIVER,
        project=sweep.project,
        user=sweep.created_by,
        base_model_id=sweep.base_model_id,
        dataset_version_id=sweep.dataset_version_id,
        config=TrainingConfig.model_validate(sweep.base_config),
        name=f"{sweep.name} · ray tune driver",
    )
    Sweep.objects.filter(pk=sweep.pk).update(driver_job=job)
    sweep.driver_job = job
    return job


def driver_spec(*, job: Job) -> RaySweep:
    """What a driver job's JobSpec carries: the whole search.

    A later attempt (the first one was lost) runs only the trials that have not
    ended yet, numbered after every trial reported so far.
    """
    sweep = Sweep.objects.filter(driver_job_id=job.pk).first()
    if sweep is None:
        raise NotFound(f"Job {job.pk} is a sweep driver that drives no sweep.")
    trials = sweep.trials.all()
    ended = trials.exclude(state=TrialState.RUNNING).count()
    last = trials.order_by("-number").values_list("number", flat=True).first()
    return RaySweep(
        search_space=sweep.search_space,
        objective_metric=sweep.objective_metric,
        intermediate_metric=sweep.intermediate_metric,
        # The model's choices are the contract's words (ray_settings_check kept the sampler to
        # RAY_SAMPLERS), and RaySweep validates both again.
        direction=cast(SweepDirection, Direction(sweep.direction).value),
        sampler=cast(RaySampler, Sampler(sweep.sampler).value),
        scheduler=RAY_PRUNERS[Pruner(sweep.pruner)],
        n_trials=max(sweep.n_trials - ended, 0),
        first_trial_number=0 if last is None else last + 1,
        max_concurrent_trials=sweep.parallelism,
        seed=sweep.seed,
    )


def ray_trial_record(*, job_id: int, report: SweepTrialReport) -> Trial:
    """Create or update the row of one trial a driver reports; a finished trial stays as it ended.

    Only the attempt now running may report: one the control plane has given up
    on (lost, then retried) is refused with a Conflict, as its heartbeats are.
    """
    sweep = Sweep.objects.select_related("driver_job").filter(driver_job_id=job_id).first()
    if sweep is None:
        raise NotFound(f"Job {job_id} drives no sweep.")
    unknown = set(report.params) - set(sweep.search_space)
    if unknown:
        raise ValidationFailed(
            f"'params' names what the sweep does not search: {', '.join(sorted(unknown))}."
        )
    fields = {
        "params": report.params,
        "state": TrialState(report.state.value),
        "value": report.value if report.state is SweepTrialState.COMPLETE else None,
        "intermediate_values": [list(point) for point in report.intermediate_values],
        "mlflow_run_id": report.mlflow_run_id or "",
        "error": report.error,
    }
    try:
        with transaction.atomic():
            # Checked under the job's row lock: the driver's end cannot slip in
            # between the check and the write and leave a trial running for good.
            live = Job.objects.select_for_update().filter(
                pk=job_id, attempt=report.attempt, status__in=[JobStatus.RUNNING, JobStatus.CANCELLING]
            )
            if not live.exists():
                raise Conflict(f"Job {job_id} attempt {report.attempt} is not running.")
            trial, created = Trial.objects.select_for_update().get_or_create(
                sweep=sweep, number=report.number, defaults=fields
            )
            # Compare-and-set on the state: a late or repeated report never reopens an ended trial.
            if created:
                Sweep.objects.filter(pk=sweep.pk).update(trials_launched=F("trials_launched") + 1)
            elif trial.state == TrialState.RUNNING:
                Trial.objects.filter(pk=trial.pk, state=TrialState.RUNNING).update(**fields)
    except IntegrityError:
        # Two reports of a new trial raced to create it; the other one did.
        return ray_trial_record(job_id=job_id, report=report)
    trial.refresh_from_db()
    return trial


def driver_finish(*, job_id: int) -> None:
    """The driver job ended: so did its sweep, and any trial it had not reported as ended."""
    sweep = Sweep.objects.select_related("driver_job").filter(driver_job_id=job_id).first()
    if sweep is None:
        return
    job = sweep.driver_job
    assert job is not None  # always: the sweep was found by its driver job
    if not JobStatus(job.status).is_finished():
        return
    Trial.objects.filter(sweep=sweep, state=TrialState.RUNNING).update(state=TrialState.FAILED)
    if job.status == JobStatus.SUCCEEDED:
        status, reason = SweepStatus.FINISHED, f"its budget of {sweep.n_trials} trials is spent"
    else:
        status, reason = SweepStatus.STOPPED, f"its Ray driver job {job.status}: {job.error}".rstrip(": ")
    # Only a running (or paused) sweep: a person's stop keeps its own reason.
    Sweep.objects.filter(pk=sweep.pk, status__in=[SweepStatus.RUNNING, SweepStatus.PAUSED]).update(
        status=status, stop_reason=reason[:300]
    )


def drivers_reconcile() -> None:
    """Catch up on drivers whose end was not applied to their sweep (a lost on-commit hook)."""
    finished = [status for status in JobStatus if status.is_finished()]
    for job_id in Sweep.objects.filter(
        status=SweepStatus.RUNNING, driver_job__status__in=finished
    ).values_list("driver_job_id", flat=True):
        driver_finish(job_id=job_id)
