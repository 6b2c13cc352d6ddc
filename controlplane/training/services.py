"""Every write to jobs. ``job_transition`` is the only code that changes a job's status."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, FloatField, Q, Sum
from django.utils import timezone
from pydantic import ValidationError

from controlplane.accounts.models import Project, Role
from controlplane.accounts.selectors import project_role_check
from controlplane.datasets.models import DatasetFormat, DatasetVersion
from controlplane.errors import Conflict, Forbidden, NotFound, ValidationFailed, pydantic_parse
from controlplane.faults import DISPATCH_BEFORE_PUBLISH, fault_point
from controlplane.naming import name_check
from controlplane.training import broker
from controlplane.training.models import (
    BaseModel,
    Job,
    JobEvent,
    JobKind,
    JobLogLine,
    JobMetricPoint,
    JobStatus,
    Worker,
    broker_priority,
)
from controlplane.training.selectors import base_model_get, dataset_version_get
from workers.spec import (
    EvaluateConfig,
    EvaluationMetric,
    Heartbeat,
    HeartbeatReply,
    JobOutcome,
    JobResult,
    JobSpec,
    TrainedArtifact,
    TrainedArtifactKind,
    TrainingConfig,
    WorkerHeartbeat,
)
from workers.spec import JobKind as SpecKind

log = logging.getLogger(__name__)

S = JobStatus
# The legal moves. Anything else is refused, so a late or repeated event can
# never move a job backwards.
# A move back to QUEUED always starts a new attempt (see job_transition).
TRANSITIONS: dict[JobStatus, set[JobStatus]] = {
    S.QUEUED: {S.RUNNING, S.CANCELLED},
    S.RUNNING: {S.SUCCEEDED, S.FAILED, S.CANCELLING, S.QUEUED},
    S.CANCELLING: {S.CANCELLED, S.SUCCEEDED, S.FAILED},
    S.SUCCEEDED: set(),
    S.FAILED: {S.QUEUED},
    S.CANCELLED: {S.QUEUED},
}


def _fresh_attempt_fields(attempt: int) -> dict[str, Any]:
    """What a new attempt starts from: nothing of the last one but its history."""
    return {
        "attempt": attempt + 1,
        "worker": "",
        "progress": 0.0,
        "step": 0,
        "total_steps": 0,
        "mlflow_run_id": "",
        "metrics": {},
        "artifacts": {},
        "error": "",
        "dispatched_at": None,
        "published_at": None,
        "broker_epoch": "",
        "started_at": None,
        "heartbeat_at": None,
        "finished_at": None,
    }


def job_transition(
    *,
    job_id: int,
    attempt: int,
    to: JobStatus,
    actor=None,
    actor_label: str = "",
    message: str = "",
    **fields: Any,
) -> bool:
    """Move a job to ``to`` if that is legal from its current status; return whether we won.

    The update is conditional on the status and attempt we read, so of two
    writers racing (two workers claiming, a cancel against a finish) exactly
    one wins and the other gets False. The audit row is written in the same
    transaction as the change. Moving to QUEUED starts attempt ``attempt + 1``:
    events of the old attempt are then refused, which fences a worker that was
    only presumed lost.
    """
    current = (
        Job.objects.filter(pk=job_id)
        .values_list("status", "attempt", "started_at", "gpus", "project_id")
        .first()
    )
    if current is None:
        return False
    status, current_attempt, started_at, gpus, project_id = JobStatus(current[0]), *current[1:]
    if current_attempt != attempt or to not in TRANSITIONS[status]:
        return False
    live = (S.RUNNING, S.CANCELLING)
    if status in live and to not in live and started_at is not None:
        # The attempt stops running here: account its time (GPU-hours are gpus x run time).
        fields["run_seconds"] = F("run_seconds") + (timezone.now() - started_at).total_seconds()
    if to == S.QUEUED:
        fields |= _fresh_attempt_fields(attempt)
    with transaction.atomic():
        won = Job.objects.filter(pk=job_id, status=status, attempt=attempt).update(status=to, **fields)
        if not won:
            return False
        JobEvent.objects.create(
            job_id=job_id,
            actor=actor,
            actor_label=actor_label,
            attempt=fields.get("attempt", attempt),
            from_status=status,
            to_status=to,
            message=message[:5000],
        )
        if gpus and (to.is_finished() or to == S.QUEUED):
            # GPUs (or a reservation) were freed: jobs waiting for the quota may go now.
            transaction.on_commit(lambda: jobs_schedule(project_id=project_id))
        if to.is_finished():
            # A sweep's trial: its study learns the outcome (a no-op for other jobs).
            transaction.on_commit(lambda: _trial_finish(job_id))
    return True


def _trial_finish(job_id: int) -> None:
    from controlplane.sweeps.raysweeps import driver_finish
    from controlplane.sweeps.services import trial_finish

    trial_finish(job_id=job_id)
    driver_finish(job_id=job_id)  # a Ray sweep's driver: its sweep ends with it


def base_model_create(
    *,
    project: Project,
    user,
    name: object,
    uri: str,
    description: str = "",
    trust_remote_code: bool = False,
) -> BaseModel:
    """Register a model to fine-tune from: a hub id, a path on the workers, or an MLflow URI.

    ``trust_remote_code`` lets the model repository's own Python run on the
    workers that load it; only a site admin may allow it.
    """
    project_role_check(user=user, project=project, role=Role.MEMBER)
    if trust_remote_code and not user.is_superuser:
        raise Forbidden(
            "Only a site admin can allow a base model's own code to run on the workers (trust_remote_code)."
        )
    name = name_check(name, what="base model")
    uri = uri.strip()
    if not uri or len(uri) > 1000:
        raise ValidationFailed("'uri' is required: a hub id, a path or an MLflow artifact URI.")
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
    user,
    base_model_id: int,
    dataset_version_id: int,
    config: dict[str, Any] | None = None,
    name: str = "",
    priority: int = 0,
) -> Job:
    project_role_check(user=user, project=project, role=Role.MEMBER)
    if not -100 <= priority <= 100:
        raise ValidationFailed("'priority' is between -100 and 100 (higher goes first).")
    training_config = pydantic_parse(TrainingConfig, config or {}, field="config")
    base_model = base_model_get(project=project, base_model_id=base_model_id)
    dataset_version = dataset_version_get(project=project, dataset_version_id=dataset_version_id)
    method = training_config.method.name
    job = Job(
        name=(name or f"{method} {base_model.name} on {dataset_version}")[:200],
        created_by=user,
        base_model=base_model,
        dataset_version=dataset_version,
        config=training_config.model_dump(mode="json"),
        queue=training_config.resources.queue_name,
        gpus=training_config.resources.gpus,
        priority=priority,
        mlflow_experiment=f"tuneyard/{project.slug}",
    )
    return _job_insert(job, project=project, user=user)


def _job_insert(job: Job, *, project: Project, user) -> Job:
    """Store a new job, queued, and send it on commit unless its project holds it."""
    with transaction.atomic():
        # Decided in the same transaction as the insert, under the project's row
        # lock: one commit, and no second look at the row before the publish.
        reason = _dispatch_reserve(job, project_id=project.pk)
        job.save(force_insert=True)
        JobEvent.objects.create(job=job, actor=user, attempt=1, to_status=S.QUEUED)
        if not reason:
            # Sent only once the row is committed; if the send is lost, the reconciler resends.
            transaction.on_commit(lambda: _job_publish(job))
    return job


# Which dataset schemas each metric can score. Generation metrics need a prompt
# and its reference answer; perplexity needs rows that read as text;
# multiple-choice accuracy needs the choices apart.
_GENERATION_METRICS = (EvaluationMetric.BLEU, EvaluationMetric.ROUGE, EvaluationMetric.EXACT_MATCH)
_METRIC_SCHEMAS: dict[EvaluationMetric, tuple[DatasetFormat, ...]] = {
    EvaluationMetric.PERPLEXITY: (
        DatasetFormat.TEXT,
        DatasetFormat.INSTRUCTION,
        DatasetFormat.CHAT,
        DatasetFormat.PREFERENCE,
    ),
    **dict.fromkeys(_GENERATION_METRICS, (DatasetFormat.INSTRUCTION, DatasetFormat.CHAT)),
    EvaluationMetric.MULTIPLE_CHOICE: (DatasetFormat.MULTIPLE_CHOICE,),
}


def evaluate_job_create(
    *,
    project: Project,
    user,
    dataset_version_id: int,
    base_model_id: int | None = None,
    source_job_id: int | None = None,
    fewshot_dataset_version_id: int | None = None,
    config: dict[str, Any] | None = None,
    name: str = "",
    priority: int = 0,
) -> Job:
    """Queue a job that scores a model on a dataset version: a base model as it is, or the adapter
    or model a succeeded finetune (``source_job``) trained on it. Nothing is stored unless every
    input fits: the metrics the dataset's schema allows, few-shot examples enough."""
    project_role_check(user=user, project=project, role=Role.MEMBER)
    if not -100 <= priority <= 100:
        raise ValidationFailed("'priority' is between -100 and 100 (higher goes first).")
    evaluate = pydantic_parse(EvaluateConfig, config or {}, field="config")
    source_job = None
    if source_job_id is not None:
        source_job = _evaluated_job(project=project, job_id=source_job_id)
        if base_model_id is not None and base_model_id != source_job.base_model_id:
            raise ValidationFailed(
                f"Job {source_job.pk} trained on base model {source_job.base_model_id}, not "
                f"{base_model_id}: leave 'base_model' out to evaluate it on its own base model."
            )
        base_model = source_job.base_model
    elif base_model_id is not None:
        base_model = base_model_get(project=project, base_model_id=base_model_id)
    else:
        raise ValidationFailed("Say what to evaluate: 'base_model', or 'source_job' (a succeeded finetune).")
    dataset_version = dataset_version_get(project=project, dataset_version_id=dataset_version_id)
    fewshot_version = None
    if fewshot_dataset_version_id is not None and fewshot_dataset_version_id != dataset_version.pk:
        # The evaluated version itself is the default pool, from which each question's own
        # row is left out: named explicitly, its answers would be shown to it.
        fewshot_version = dataset_version_get(project=project, dataset_version_id=fewshot_dataset_version_id)
    _evaluation_fits(evaluate, dataset_version, fewshot_version)
    subject = f"job {source_job.pk}" if source_job else base_model.name
    job = Job(
        kind=JobKind.EVALUATE,
        name=(name or f"evaluate {subject} on {dataset_version}")[:200],
        created_by=user,
        base_model=base_model,
        dataset_version=dataset_version,
        source_job=source_job,
        fewshot_dataset_version=fewshot_version,
        config=evaluate.model_dump(mode="json"),
        queue=evaluate.resources.queue_name,
        gpus=evaluate.resources.gpus,
        priority=priority,
        mlflow_experiment=f"tuneyard/{project.slug}",
    )
    return _job_insert(job, project=project, user=user)


def _evaluated_job(*, project: Project, job_id: int) -> Job:
    """A finetune of ``project`` that succeeded with a trained adapter or model."""
    job = Job.objects.select_related("base_model").filter(pk=job_id, project=project).first()
    if job is None:
        raise NotFound(f"No job {job_id} in project {project.slug}.")
    if job.kind != JobKind.FINETUNE:
        raise ValidationFailed(f"Job {job.pk} is an evaluation; evaluate the finetune it evaluated instead.")
    if job.status != S.SUCCEEDED:
        raise Conflict(f"Job {job.pk} is {job.status}; only a succeeded finetune can be evaluated.")
    if _trained_artifact(job) is None:
        raise Conflict(
            f"Job {job.pk} produced no adapter or model to evaluate (a sweep's driver trains none)."
        )
    return job


def _trained_artifact(job: Job) -> TrainedArtifact | None:
    # The whole model first, as registration takes it: an adapter merged for
    # export is scored as it will be deployed.
    for kind in (TrainedArtifactKind.MODEL, TrainedArtifactKind.ADAPTER):
        uri = job.artifacts.get(kind.value)
        if uri:
            return TrainedArtifact(kind=kind, uri=uri)
    return None


def _evaluation_fits(config: EvaluateConfig, dataset: DatasetVersion, fewshot: DatasetVersion | None) -> None:
    """Refuse metrics the dataset's schema cannot give, and few-shot settings that cannot work."""
    evaluation = config.evaluation
    for metric in evaluation.metrics:
        schemas = _METRIC_SCHEMAS[metric]
        if dataset.format not in schemas:
            raise ValidationFailed(
                f"{metric.value} needs a dataset of schema {' or '.join(schemas)}; "
                f"{dataset} is {dataset.format}."
            )
    choice = EvaluationMetric.MULTIPLE_CHOICE in evaluation.metrics
    if not choice:
        if evaluation.num_fewshot or fewshot is not None:
            raise ValidationFailed(
                "Few-shot examples ('num_fewshot', 'fewshot_dataset_version') are for multiple_choice."
            )
        return
    if fewshot is not None:
        if fewshot.format != DatasetFormat.MULTIPLE_CHOICE:
            raise ValidationFailed(
                f"The few-shot examples must be multiple-choice; {fewshot} is {fewshot.format}."
            )
        if evaluation.num_fewshot == 0:
            raise ValidationFailed("'fewshot_dataset_version' is given but 'num_fewshot' is 0.")
        if fewshot.row_count < evaluation.num_fewshot:
            raise ValidationFailed(
                f"{evaluation.num_fewshot}-shot needs {evaluation.num_fewshot} few-shot examples; "
                f"{fewshot} has {fewshot.row_count} rows."
            )
    elif evaluation.num_fewshot and dataset.row_count <= evaluation.num_fewshot:
        # Each question's examples are drawn from the others.
        raise ValidationFailed(
            f"{evaluation.num_fewshot}-shot from the evaluated rows needs more than "
            f"{evaluation.num_fewshot} of them; {dataset} has {dataset.row_count}."
        )


def job_spec_build(job: Job) -> JobSpec:
    if job.kind == JobKind.EVALUATE:
        return _evaluate_spec_build(job)
    from controlplane.sweeps.raysweeps import driver_spec

    sweep = driver_spec(job=job)  # a Ray sweep's driver job carries the whole search
    return JobSpec(
        job_id=job.pk,
        attempt=job.attempt,
        kind=SpecKind.SWEEP_DRIVER if sweep else SpecKind.FINETUNE,
        sweep=sweep,
        project=job.project.slug,
        base_model_uri=job.base_model.uri,
        trust_remote_code=job.base_model.trust_remote_code,
        dataset_uris=[job.dataset_version.uri],
        config=TrainingConfig.model_validate(job.config),
        mlflow_experiment=job.mlflow_experiment,
        mlflow_run_id=job.mlflow_run_id or None,
        resume_checkpoint_uri=job.checkpoint_uri or None,
    )


def _evaluate_spec_build(job: Job) -> JobSpec:
    evaluate = EvaluateConfig.model_validate(job.config)
    return JobSpec(
        job_id=job.pk,
        attempt=job.attempt,
        kind=SpecKind.EVALUATE,
        project=job.project.slug,
        base_model_uri=job.base_model.uri,
        trust_remote_code=job.base_model.trust_remote_code,
        dataset_uris=[job.dataset_version.uri],
        config=TrainingConfig(resources=evaluate.resources),
        evaluation=evaluate.evaluation,
        # A succeeded job's artifacts never change, so they are read now rather than copied at creation.
        trained_artifact=_trained_artifact(job.source_job) if job.source_job is not None else None,
        fewshot_dataset_uri=job.fewshot_dataset_version.uri if job.fewshot_dataset_version else None,
        mlflow_experiment=job.mlflow_experiment,
        mlflow_run_id=job.mlflow_run_id or None,
    )


PAUSED_REASON = "paused: the project's dispatch is paused by an admin"


def _dispatch_block(job: Job) -> str:
    """Why the project keeps this job waiting now (paused, over a quota), or "" if it does not."""
    project = job.project
    if project.dispatch_paused:
        return PAUSED_REASON
    if job.gpus == 0:
        return ""
    if project.max_concurrent_gpus is not None:
        # Running jobs, and queued ones already sent, hold their GPUs.
        holding = Job.objects.filter(project=project).filter(
            Q(status__in=[S.RUNNING, S.CANCELLING]) | Q(status=S.QUEUED, dispatched_at__isnull=False)
        )
        in_use = holding.exclude(pk=job.pk).aggregate(n=Sum("gpus"))["n"] or 0
        if in_use + job.gpus > project.max_concurrent_gpus:
            return (
                f"quota: {in_use} of {project.max_concurrent_gpus} GPUs of project {project.slug} "
                f"are in use; this job needs {job.gpus}"
            )
    if project.gpu_hours_quota is not None:
        since = timezone.now() - timedelta(days=project.quota_period_days)
        used_seconds = Job.objects.filter(project=project, finished_at__gte=since).aggregate(
            s=Sum(F("gpus") * F("run_seconds"), output_field=FloatField())
        )["s"]
        used = (used_seconds or 0) / 3600
        if used >= project.gpu_hours_quota:
            return (
                f"quota: {used:.1f} of {project.gpu_hours_quota:g} GPU-hours of project {project.slug} "
                f"used in the last {project.quota_period_days} days"
            )
    return ""


def job_dispatch(*, job_id: int) -> bool:
    """Send a queued job to its queue unless its project is paused or over quota; else record why it waits.

    Safe to call twice: the claim lets only one attempt run.
    """
    with transaction.atomic():
        job = (
            Job.objects.select_related("base_model", "dataset_version")
            .filter(pk=job_id, status=S.QUEUED)
            .first()
        )
        if job is None:
            return False
        reason = _dispatch_reserve(job, project_id=job.project_id)
        Job.objects.filter(pk=job_id, status=S.QUEUED, attempt=job.attempt).update(
            waiting_reason=reason, dispatched_at=job.dispatched_at, published_at=None
        )
    if reason:
        return False
    return _job_publish(job)


def _dispatch_reserve(job: Job, *, project_id: int) -> str:
    """Lock the job's project row, then decide: why the job waits, or reserve its GPUs (``dispatched_at``).

    Sets ``job.project``, ``waiting_reason`` and ``dispatched_at`` on the
    object; the caller writes them in the same transaction. Under the lock, two
    dispatches cannot both take the last GPU, and a pause committed a moment
    ago counts.
    """
    job.project = Project.objects.select_for_update().get(pk=project_id)
    reason = _dispatch_block(job)
    job.waiting_reason = reason
    job.dispatched_at = None if reason else timezone.now()
    return reason


def _job_publish(job: Job) -> bool:
    """Send a committed, reserved job to its queue; a failure is left for the reconciler."""
    # Imported here: the Celery app reads Django settings, which must be ready.
    from controlplane.celery import app

    spec = job_spec_build(job)
    # The job is committed and marked sent; dying here loses only the message,
    # which the reconciler sees as never published.
    fault_point(DISPATCH_BEFORE_PUBLISH)
    epoch = broker.broker_epoch()
    try:
        app.send_task(
            "tuneyard.run_job",
            args=[spec.model_dump(mode="json")],
            queue=job.queue,
            priority=broker_priority(job.priority),
            # What Celery logs and shows of the message: a name, not a repr of the whole spec.
            argsrepr=f"(job {job.pk}, attempt {job.attempt})",
        )
    except Exception:  # noqa: BLE001 - any broker failure is transient here
        log.exception("dispatch of job %s failed; the reconciler will resend it", job.pk)
        return False
    Job.objects.filter(pk=job.pk, status=S.QUEUED, attempt=job.attempt).update(
        published_at=timezone.now(), broker_epoch=epoch
    )
    return True


def jobs_schedule(*, project_id: int) -> int:
    """Send a project's held jobs, highest priority first, while pause and quotas allow.

    The first GPU job that does not fit keeps its place, and GPU jobs behind it
    wait too; jobs that take no GPU are not held by GPU quotas and go on.
    """
    waiting = Job.objects.filter(project_id=project_id, status=S.QUEUED, dispatched_at__isnull=True).exclude(
        waiting_reason=""
    )
    sent, gpu_blocked = 0, False
    for job_id, gpus in waiting.order_by("-priority", "created_at").values_list("pk", "gpus"):
        if gpus and gpu_blocked:
            continue
        if job_dispatch(job_id=job_id):
            sent += 1
        elif Project.objects.filter(pk=project_id, dispatch_paused_at__isnull=False).exists():
            break  # paused: nothing goes
        elif gpus:
            gpu_blocked = True
    return sent


def jobs_redispatch_unclaimed() -> int:
    """Send again each queued job whose message was lost; each test below is one way to lose it.

    * never published: the web process died between the commit and the publish,
      or the broker refused the message (after a grace for sends in flight);
    * published to an earlier run of the broker: it restarted without persistence;
    * published a while ago, not claimed, and no longer waiting in its queue: a
      worker took the message and died before claiming it (when the queue
      cannot be read, only after JOB_REDISPATCH_AFTER_SECONDS);
    * held for quota or a pause that no longer holds it.
    """
    now = timezone.now()
    queued = Job.objects.filter(status=S.QUEUED, waiting_reason="")
    grace = now - timedelta(seconds=settings.JOB_PUBLISH_GRACE_SECONDS)
    lost = Q(published_at__isnull=True, created_at__lt=grace) & (
        Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=grace)
    )
    lost |= Q(published_at__lt=now - timedelta(seconds=settings.JOB_REDISPATCH_AFTER_SECONDS))
    epoch = broker.broker_epoch()
    if epoch:
        lost |= Q(published_at__isnull=False) & ~Q(broker_epoch=epoch)
    ids = set(queued.filter(lost).values_list("pk", flat=True))
    unclaimed = queued.filter(published_at__lt=now - timedelta(seconds=settings.JOB_UNCLAIMED_SECONDS))
    candidates = list(unclaimed.values_list("pk", "attempt", "queue"))
    if candidates:
        waiting = broker.queued_attempts(queue for _, _, queue in candidates)
        if waiting is not None:
            ids |= {pk for pk, attempt, _ in candidates if (pk, attempt) not in waiting}
    sent = 0
    for job_id in sorted(ids):
        try:
            sent += job_dispatch(job_id=job_id)
        except ValidationError:
            # A stored job whose spec no longer validates must not keep the jobs after it unsent.
            log.exception("job %s cannot be dispatched: its spec does not validate", job_id)
    # Held jobs go when quota frees up, on the commit that frees it; if that
    # process died before sending them, they go from here.
    held = Job.objects.filter(status=S.QUEUED).exclude(waiting_reason="")
    for project_id in held.order_by().values_list("project_id", flat=True).distinct():
        sent += jobs_schedule(project_id=project_id)
    return sent


def project_dispatch_pause(*, project: Project, user, paused: bool) -> Project:
    """Hold (or release) every queued job of a project; running jobs go on. Idempotent."""
    project_role_check(user=user, project=project, role=Role.ADMIN)
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        if paused and locked.dispatch_paused_at is None:
            Project.objects.filter(pk=project.pk).update(
                dispatch_paused_at=timezone.now(), dispatch_paused_by=user
            )
        elif not paused and locked.dispatch_paused_at is not None:
            Project.objects.filter(pk=project.pk).update(dispatch_paused_at=None, dispatch_paused_by=None)
            transaction.on_commit(lambda: jobs_schedule(project_id=project.pk))
        if paused:
            # Under the lock, so a resume cannot slip in between. Jobs sent but
            # not yet claimed are held when a worker tries to claim them.
            Job.objects.filter(project=project, status=S.QUEUED, dispatched_at__isnull=True).update(
                waiting_reason=PAUSED_REASON
            )
    log.info("dispatch of project %s %s by %s", project.slug, "paused" if paused else "resumed", user)
    project.refresh_from_db()
    return project


def job_cancel(*, job: Job, user) -> Job:
    """Cancel a job; cancelling a finished job changes nothing."""
    project_role_check(user=user, project=job.project, role=Role.MEMBER)
    for _ in range(3):  # the status may move under us (claimed, finished); read again and retry
        job.refresh_from_db()
        if job.is_finished or job.status == S.CANCELLING:
            return job
        if job.status == S.QUEUED:
            to, extra = S.CANCELLED, {"finished_at": timezone.now()}
        else:
            to, extra = S.CANCELLING, {}
        if job_transition(job_id=job.pk, attempt=job.attempt, to=to, actor=user, **extra):
            job.refresh_from_db()
            return job
    raise Conflict("The job changed while it was being cancelled; try again.")


def job_claim(*, job_id: int, attempt: int, worker: str) -> JobSpec:
    """A worker takes a queued attempt. A second claim of the same attempt is a Conflict."""
    now = timezone.now()
    # Read once, before the transition: what the spec is built from cannot change
    # while the attempt waits (only its own running attempt writes run ids and
    # checkpoints), and the transition below is fenced by status and attempt.
    job = Job.objects.select_related("project", "base_model", "dataset_version").filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"No job {job_id}.")
    if job.project.dispatch_paused_at is not None:
        # Still paused at the update: a resume committed since the read lets the claim go on.
        held = Job.objects.filter(
            pk=job_id, attempt=attempt, status=S.QUEUED, project__dispatch_paused_at__isnull=False
        )
        if held.update(dispatched_at=None, waiting_reason=PAUSED_REASON):
            # Sent before its project was paused: it waits, and is sent again on resume.
            raise Conflict(f"Job {job_id} is held: its project's dispatch is paused.")
    won = job_transition(
        job_id=job_id,
        attempt=attempt,
        to=S.RUNNING,
        actor_label=f"worker:{worker}",
        # What the attempt starts from, for the audit trail.
        message=f"resumes from the checkpoint at step {job.checkpoint_step}" if job.checkpoint_step else "",
        worker=worker,
        started_at=now,
        heartbeat_at=now,
    )
    if not won:
        raise Conflict(f"Job {job_id} attempt {attempt} is not waiting to be claimed.")
    return job_spec_build(job)


def job_heartbeat(*, job_id: int, heartbeat: Heartbeat) -> HeartbeatReply:
    """Record progress; the reply tells the worker to stop when the job is being cancelled."""
    live = Job.objects.filter(
        pk=job_id,
        attempt=heartbeat.attempt,
        worker=heartbeat.worker,
        status__in=[S.RUNNING, S.CANCELLING],
    )
    fields: dict[str, Any] = {
        "progress": heartbeat.progress,
        "step": heartbeat.step,
        "total_steps": heartbeat.total_steps,
        "heartbeat_at": timezone.now(),
    }
    if heartbeat.mlflow_run_id:
        fields["mlflow_run_id"] = heartbeat.mlflow_run_id
    if heartbeat.gpu_indices:
        fields["gpu_indices"] = heartbeat.gpu_indices
    with transaction.atomic():
        if not live.update(**fields):
            return HeartbeatReply(stop=True, reason="this attempt no longer runs")
        if heartbeat.checkpoint is not None:
            # Only forward: a resent heartbeat must not put an older checkpoint back.
            live.filter(checkpoint_step__lt=heartbeat.checkpoint.step).update(
                checkpoint_step=heartbeat.checkpoint.step, checkpoint_uri=heartbeat.checkpoint.uri
            )
        JobMetricPoint.objects.bulk_create(
            [
                JobMetricPoint(job_id=job_id, attempt=heartbeat.attempt, name=name, step=step, value=value)
                for name, points in heartbeat.metrics.items()
                for step, value in points
            ],
            ignore_conflicts=True,  # a resent heartbeat repeats points; keep the first
        )
        JobLogLine.objects.bulk_create(
            [
                JobLogLine(job_id=job_id, attempt=heartbeat.attempt, text=line[:2000])
                for line in heartbeat.log_lines
            ]
        )
    status = Job.objects.filter(pk=job_id).values_list("status", flat=True).first()
    if status == S.CANCELLING:
        return HeartbeatReply(stop=True, reason="cancelled")
    pruned = _trial_report(job_id, heartbeat)
    if pruned and job_transition(
        job_id=job_id, attempt=heartbeat.attempt, to=S.CANCELLING, actor_label="sweep", message=pruned
    ):
        return HeartbeatReply(stop=True, reason=pruned)
    return HeartbeatReply()


def _trial_report(job_id: int, heartbeat: Heartbeat) -> str:
    """For a sweep's trial: feed its pruner; the reason to stop it now, or ""."""
    from controlplane.sweeps.models import Trial
    from controlplane.sweeps.services import trial_report

    metric = Trial.objects.filter(job_id=job_id).values_list("sweep__intermediate_metric", flat=True).first()
    if metric is None or metric not in heartbeat.metrics:
        return ""
    return trial_report(job_id=job_id, points=heartbeat.metrics[metric])


_OUTCOME_STATUS = {
    JobOutcome.SUCCEEDED: S.SUCCEEDED,
    JobOutcome.FAILED: S.FAILED,
    JobOutcome.CANCELLED: S.CANCELLED,
}


def job_finish(*, job_id: int, result: JobResult) -> Job:
    """Record an attempt's end. Reporting the same end twice is harmless.

    A retryable failure of a running attempt starts the next attempt instead
    (from the last checkpoint), up to JOB_MAX_ATTEMPTS.
    """
    if (
        result.outcome is JobOutcome.FAILED
        and result.retryable
        and result.attempt < settings.JOB_MAX_ATTEMPTS
    ):
        with transaction.atomic():
            if job_transition(
                job_id=job_id,
                attempt=result.attempt,
                to=S.QUEUED,
                actor_label=f"worker:{result.worker}",
                message=f"attempt {result.attempt} failed, trying again: {result.error}",
            ):
                transaction.on_commit(lambda: job_dispatch(job_id=job_id))
                return Job.objects.get(pk=job_id)
    to = _OUTCOME_STATUS[result.outcome]
    fields: dict[str, Any] = {
        "finished_at": timezone.now(),
        "metrics": result.metrics,
        "artifacts": result.artifacts,
        "error": result.error,
    }
    if result.mlflow_run_id:
        fields["mlflow_run_id"] = result.mlflow_run_id
    if to == S.SUCCEEDED:
        fields["progress"] = 1.0
    won = job_transition(
        job_id=job_id,
        attempt=result.attempt,
        to=to,
        actor_label=f"worker:{result.worker}",
        message=result.error,
        **fields,
    )
    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"No job {job_id}.")
    if not won and not (job.status == to and job.attempt == result.attempt):
        raise Conflict(f"Job {job_id} attempt {result.attempt} cannot end as {to} from {job.status}.")
    return job


def job_retry(*, job: Job, user) -> Job:
    """Run a failed or cancelled job again as a new attempt; a job still alive is left as it is."""
    project_role_check(user=user, project=job.project, role=Role.MEMBER)
    job.refresh_from_db()
    if job.status == S.SUCCEEDED:
        raise Conflict(f"Job {job.pk} succeeded; clone it to train again.")
    if hasattr(job, "trial"):
        raise Conflict(f"Job {job.pk} is a trial of sweep {job.trial.sweep_id}; rerun failed trials there.")
    if hasattr(job, "driven_sweep"):
        raise Conflict(f"Job {job.pk} drives sweep {job.driven_sweep.pk}; start a new sweep instead.")
    if job.status in (S.FAILED, S.CANCELLED):
        with transaction.atomic():
            if job_transition(job_id=job.pk, attempt=job.attempt, to=S.QUEUED, actor=user, message="retried"):
                transaction.on_commit(lambda: job_dispatch(job_id=job.pk))
    job.refresh_from_db()
    return job


def job_clone(*, job: Job, user) -> Job:
    """A new job with the same base model, dataset version and config."""
    if job.kind == JobKind.EVALUATE:
        return evaluate_job_create(
            project=job.project,
            user=user,
            dataset_version_id=job.dataset_version_id,
            base_model_id=job.base_model_id,
            source_job_id=job.source_job_id,
            fewshot_dataset_version_id=job.fewshot_dataset_version_id,
            config=job.config,
            name=f"{job.name} (clone of {job.pk})"[:200],
            priority=job.priority,
        )
    return job_create(
        project=job.project,
        user=user,
        base_model_id=job.base_model_id,
        dataset_version_id=job.dataset_version_id,
        config=job.config,
        name=f"{job.name} (clone of {job.pk})"[:200],
        priority=job.priority,
    )


def jobs_recover_lost() -> dict[str, int]:
    """Deal with attempts whose worker went silent: retry them, up to the attempt limit.

    A silent attempt may still be running on a worker cut off from us; the new
    attempt fences it (its heartbeats are told to stop, its result is refused).
    """
    cutoff = timezone.now() - timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT_SECONDS)
    silent = Job.objects.filter(status__in=[S.RUNNING, S.CANCELLING], heartbeat_at__lt=cutoff)
    counts = {"retried": 0, "failed": 0, "cancelled": 0}
    heard_lately = (
        Job.objects.filter(heartbeat_at__gte=cutoff).exists()
        or Worker.objects.filter(last_seen__gte=cutoff).exists()
    )
    if not heard_lately:
        # Every worker silent at once is far likelier a deaf control plane (a web
        # outage, a slow deploy) than every worker dying: retrying now would kill
        # attempts that are fine. Once any worker is heard again, the sweep runs.
        if silent.exists():
            log.warning(
                "no worker heard for %ss; silent jobs are not retried yet",
                settings.JOB_HEARTBEAT_TIMEOUT_SECONDS,
            )
        return counts
    for job_id, status, attempt in silent.values_list("pk", "status", "attempt"):
        silence = f"no heartbeat for {settings.JOB_HEARTBEAT_TIMEOUT_SECONDS}s from attempt {attempt}"
        if status == S.CANCELLING:
            outcome, to, extra = "cancelled", S.CANCELLED, {"finished_at": timezone.now()}
        elif attempt < settings.JOB_MAX_ATTEMPTS:
            outcome, to, extra = "retried", S.QUEUED, {}
        else:
            outcome, to = "failed", S.FAILED
            extra = {
                "finished_at": timezone.now(),
                "error": f"lost: {silence}, the last of {settings.JOB_MAX_ATTEMPTS} attempts",
            }
        with transaction.atomic():
            if job_transition(
                job_id=job_id, attempt=attempt, to=to, actor_label="reconciler", message=silence, **extra
            ):
                counts[outcome] += 1
                if to == S.QUEUED:
                    transaction.on_commit(lambda job_id=job_id: job_dispatch(job_id=job_id))
    return counts


def worker_heartbeat_record(*, heartbeat: WorkerHeartbeat) -> Worker:
    """Remember what a worker says of itself; the newest heartbeat wins."""
    worker, _ = Worker.objects.update_or_create(
        name=heartbeat.name,
        defaults={
            "host": heartbeat.host,
            "queues": heartbeat.queues,
            "gpus": [gpu.model_dump() for gpu in heartbeat.gpus],
            "version": heartbeat.version,
            "running_job_ids": heartbeat.running_job_ids,
            "last_seen": timezone.now(),
        },
    )
    _gpu_idleness_record(heartbeat)
    return worker


def _gpu_idleness_record(heartbeat: WorkerHeartbeat) -> None:
    """Start or stop the idle clock of each running job whose GPUs this worker measured."""
    utilization = {gpu.index: gpu.utilization_percent for gpu in heartbeat.gpus}
    jobs = Job.objects.filter(
        pk__in=heartbeat.running_job_ids, worker=heartbeat.name, status__in=[S.RUNNING, S.CANCELLING]
    ).exclude(gpu_indices=[])
    for job_id, indices in jobs.values_list("pk", "gpu_indices"):
        # Unknown utilization (None) is not idleness.
        idle = all(utilization.get(index) == 0 for index in indices)
        if idle:
            Job.objects.filter(pk=job_id, gpu_idle_since__isnull=True).update(gpu_idle_since=timezone.now())
        else:
            Job.objects.filter(pk=job_id).exclude(gpu_idle_since=None).update(gpu_idle_since=None)
