"""What people do to jobs: register base models, launch finetunes, cancel, retry and clone."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from controlplane.accounts.models import Project, Role, User
from controlplane.accounts.selectors import project_role_check
from controlplane.errors import Conflict, Forbidden
from controlplane.naming import name_check
from controlplane.training import hooks
from controlplane.training.models import BaseModel, Job, JobKind, JobStatus
from controlplane.training.preflight import job_preflight
from controlplane.training.selectors import (
    base_model_get,
    base_model_uri_check,
    dataset_version_get,
    objective_dataset_check,
)
from controlplane.training.services.dispatch import job_dispatch, job_insert
from controlplane.training.services.evaluations import evaluate_job_create
from controlplane.training.services.transitions import job_transition
from workers.spec import EvaluateConfig, TrainingConfig

S = JobStatus


def base_model_create(
    *,
    project: Project,
    user: User,
    name: object,
    uri: str,
    description: str = "",
    trust_remote_code: bool = False,
) -> BaseModel:
    """Register a model to fine-tune from: a hub id, a path or storage URI under a root a site
    admin allowed, or a ``runs:/`` or ``models:/`` URI of the project (the rule of ``workers.uris``,
    which the workers apply again before loading it).

    ``trust_remote_code`` lets the model repository's own Python run on the
    workers that load it; only a site admin may allow it.
    """
    project_role_check(user=user, project=project, role=Role.MEMBER)
    if trust_remote_code and not user.is_superuser:
        raise Forbidden(
            "Only a site admin can allow a base model's own code to run on the workers (trust_remote_code)."
        )
    name = name_check(name, what="base model")
    # Not stripped: a URI with whitespace anywhere is refused, rather than stored as something else.
    base_model_uri_check(project=project, uri=uri)
    try:
        with transaction.atomic():
            return BaseModel.objects.create(
                project=project,
                name=name,
                uri=uri,
                description=description,
                trust_remote_code=trust_remote_code,
            )
    except IntegrityError as exc:
        raise Conflict(f"Project {project.slug} already has a base model {name!r}.") from exc


def job_create(
    *,
    project: Project,
    user: User,
    base_model_id: int,
    dataset_version_id: int,
    config: TrainingConfig,
    name: str = "",
    priority: int = 0,
    kind: JobKind = JobKind.FINETUNE,
) -> Job:
    """Queue a job that trains: a finetune, or (for the sweeps app) a Ray sweep's driver."""
    if kind not in (JobKind.FINETUNE, JobKind.SWEEP_DRIVER):
        raise ValueError(f"job_create makes jobs that train, not {kind} jobs")
    project_role_check(user=user, project=project, role=Role.MEMBER)
    training_config = config
    base_model = base_model_get(project=project, base_model_id=base_model_id)
    dataset_version = dataset_version_get(project=project, dataset_version_id=dataset_version_id)
    objective_dataset_check(config=training_config, dataset_version=dataset_version)
    # Refuses a job that cannot train; what it only should know rides on the job it gets back.
    warnings = job_preflight(base_model=base_model, dataset_version=dataset_version, config=training_config)
    method = training_config.method.name
    job = Job(
        kind=kind,
        name=(name or f"{method} {base_model.name} on {dataset_version}")[:200],
        created_by=user,
        base_model=base_model,
        dataset_version=dataset_version,
        config=training_config.model_dump(mode="json"),
        priority=priority,
    )
    job = job_insert(job, project=project, user=user, resources=training_config.resources)
    job.preflight_warnings = warnings
    return job


def job_cancel(*, job: Job, user: User) -> Job:
    """Cancel a job; cancelling a finished job changes nothing."""
    project_role_check(user=user, project=job.project, role=Role.MEMBER)
    for _ in range(3):  # the status may move under us (claimed, finished); read again and retry
        job.refresh_from_db()
        if job.is_finished or job.status == S.CANCELLING:
            return job
        extra: dict[str, Any]
        if job.status == S.QUEUED:
            to, extra = S.CANCELLED, {"finished_at": timezone.now()}
        else:
            to, extra = S.CANCELLING, {}
        if job_transition(job_id=job.pk, attempt=job.attempt, to=to, actor=user, **extra):
            job.refresh_from_db()
            return job
    raise Conflict("The job changed while it was being cancelled; try again.")


def job_retry(*, job: Job, user: User) -> Job:
    """Run a failed or cancelled job again as a new attempt; a job still alive is left as it is."""
    project_role_check(user=user, project=job.project, role=Role.MEMBER)
    job.refresh_from_db()
    if job.status == S.SUCCEEDED:
        raise Conflict(f"Job {job.pk} succeeded; clone it to train again.")
    refusal = hooks.retry_refusal(job)  # a sweep's trial or driver is rerun by its sweep
    if refusal:
        raise Conflict(refusal)
    if job.status in (S.FAILED, S.CANCELLED):
        with transaction.atomic():
            if job_transition(job_id=job.pk, attempt=job.attempt, to=S.QUEUED, actor=user, message="retried"):
                transaction.on_commit(lambda: job_dispatch(job_id=job.pk))
    job.refresh_from_db()
    return job


def job_clone(*, job: Job, user: User) -> Job:
    """A new job with the same base model, dataset version and config."""
    if job.is_judge:
        # Its pairs are the answers of two evaluations, collected by the suite that launched it.
        raise Conflict(f"Job {job.pk} judges answers its suite collected: run the suite again instead.")
    if job.kind == JobKind.EVALUATE:
        return evaluate_job_create(
            project=job.project,
            user=user,
            dataset_version_id=job.dataset_version_id,
            base_model_id=job.base_model_id,
            source_job_id=job.source_job_id,
            fewshot_dataset_version_id=job.fewshot_dataset_version_id,
            config=EvaluateConfig.model_validate(job.config),
            name=f"{job.name} (clone of {job.pk})"[:200],
            priority=job.priority,
        )
    return job_create(
        project=job.project,
        user=user,
        base_model_id=job.base_model_id,
        dataset_version_id=job.dataset_version_id,
        config=TrainingConfig.model_validate(job.config),
        name=f"{job.name} (clone of {job.pk})"[:200],
        priority=job.priority,
    )
