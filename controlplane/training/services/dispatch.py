"""Getting queued jobs to the workers: quotas and pauses, the JobSpec, the publish, the resends.

A job's spec is built once per attempt, just before the attempt is first sent,
and stored on the row: the message carries it and the claim answers with it,
so what a worker runs is what was decided at dispatch. A resend of the same
attempt (a lost message) sends the stored spec again.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, FloatField, Q, Sum
from django.urls import reverse
from django.utils import timezone
from pydantic import ValidationError

from controlplane.accounts.models import Project, Role, User
from controlplane.accounts.selectors import project_role_check
from controlplane.celery import app
from controlplane.faults import DISPATCH_BEFORE_PUBLISH, fault_point
from controlplane.training import broker, hooks
from controlplane.training.models import Job, JobEvent, JobKind, JobStatus, broker_priority
from controlplane.training.services.summaries import job_param_summary_write
from workers.spec import DatasetSchema, EvaluateConfig, JobSpec, JudgeJobConfig, Resources, TrainingConfig

log = logging.getLogger(__name__)

S = JobStatus


def job_run_tags(job: Job) -> dict[str, str]:
    """The MLflow run's tags only the control plane knows: who, on what data and model, and the
    link back to the job's page (MLflow shows ``mlflow.user`` as the run's user)."""
    version = job.dataset_version
    return {
        "mlflow.user": job.created_by.username,
        "tuneyard.job_name": job.name[:250],
        "tuneyard.dataset_version": f"{version.dataset.name}:v{version.version}",
        "tuneyard.dataset_sha256": version.sha256,
        "tuneyard.base_model": job.base_model.name,
        "tuneyard.base_model_uri": job.base_model.uri[:5000],
        "tuneyard.url": settings.PUBLIC_URL.rstrip("/") + reverse("job", args=[job.pk]),
    }


def job_spec_build(job: Job) -> JobSpec:
    """The spec of the job's current attempt, from the job's row and what it points at."""
    fields: dict[str, Any] = {
        "job_id": job.pk,
        "attempt": job.attempt,
        "kind": JobKind(job.kind),
        "project": job.project.slug,
        "base_model_uri": job.base_model.uri,
        "trust_remote_code": job.base_model.trust_remote_code,
        "dataset_uris": [job.dataset_version.uri],
        "dataset_format": DatasetSchema(job.dataset_version.format),
        "mlflow_experiment": job.mlflow_experiment,
        "mlflow_run_id": job.mlflow_run_id or None,
        "run_name": f"job {job.pk} · {job.name}"[:250],
        "run_tags": job_run_tags(job),
    }
    if job.is_judge:
        judging = JudgeJobConfig.model_validate(job.config)
        source = job.source_job
        fields |= {
            "config": TrainingConfig(resources=judging.resources),
            "judge": judging.judge,
            # The judge is a base model, or what a succeeded finetune trained (e.g. a deployed version).
            "trained_artifact": source.trained_artifact if source is not None else None,
            # The pairs to judge, which the control plane wrote; the version is where their prompts came from.
            "dataset_uris": [job.input_uri],
        }
    elif job.kind == JobKind.EVALUATE:
        evaluate = EvaluateConfig.model_validate(job.config)
        source = job.source_job
        fields |= {
            "config": TrainingConfig(resources=evaluate.resources),
            "evaluation": evaluate.evaluation,
            # A succeeded job's artifacts never change, so they are read now rather than copied at creation.
            "trained_artifact": source.trained_artifact if source is not None else None,
            "fewshot_dataset_uri": (
                job.fewshot_dataset_version.uri if job.fewshot_dataset_version is not None else None
            ),
        }
    else:
        fields |= {
            "config": TrainingConfig.model_validate(job.config),
            "resume_checkpoint_uri": job.checkpoint_uri or None,
        }
    if hooks.spec_kind_owned(JobKind(job.kind)):
        fields |= hooks.spec_fields(job)  # e.g. a Ray sweep's driver carries the whole search
    return JobSpec(**fields)


def job_spec_json(job: Job) -> dict[str, Any]:
    """The stored spec of the job's current attempt; built (and set on ``job``) if it has none yet."""
    if job.spec.get("attempt") != job.attempt:
        job.spec = job_spec_build(job).model_dump(mode="json")
    return job.spec


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


def job_insert(job: Job, *, project: Project, user: User, resources: Resources) -> Job:
    """Store a new job, queued on the queue its ``resources`` name, tracked in its project's
    MLflow experiment, and send it on commit unless its project holds it."""
    job.queue, job.gpus = resources.queue_name, resources.gpus
    job.mlflow_experiment = f"tuneyard/{project.slug}"
    with transaction.atomic():
        # Decided in the same transaction as the insert, under the project's row
        # lock: one commit, and no second look at the row before the publish.
        reason = dispatch_reserve(job, project_id=project.pk)
        job.save(force_insert=True)
        JobEvent.objects.create(job=job, actor=user, attempt=1, to_status=S.QUEUED)
        job_param_summary_write(job=job)
        if not reason:
            # Sent only once the row is committed; if the send is lost, the reconciler resends.
            transaction.on_commit(lambda: job_publish(job))
    return job


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
        reason = dispatch_reserve(job, project_id=job.project_id)
        fields: dict[str, Any] = {"waiting_reason": reason, "dispatched_at": job.dispatched_at}
        if not reason:
            fields["spec"] = job_spec_json(job)
        Job.objects.filter(pk=job_id, status=S.QUEUED, attempt=job.attempt).update(
            published_at=None, **fields
        )
    if reason:
        return False
    return job_publish(job)


def dispatch_reserve(job: Job, *, project_id: int) -> str:
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


def job_publish(job: Job) -> bool:
    """Send a committed, reserved job to its queue; a failure is left for the reconciler."""
    if job.spec.get("attempt") != job.attempt:
        # A new job's spec is built here, after its commit: it needs the job's id, and the
        # owner of a sweep's driver job links to it in the same transaction as the insert.
        # Stored before the send, so the claim answers with this very spec.
        Job.objects.filter(pk=job.pk, status=S.QUEUED, attempt=job.attempt).update(spec=job_spec_json(job))
    # The job is committed and marked sent; dying here loses only the message,
    # which the reconciler sees as never published.
    fault_point(DISPATCH_BEFORE_PUBLISH)
    epoch = broker.broker_epoch()
    try:
        app.send_task(
            "tuneyard.run_job",
            args=[job.spec],
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


def project_dispatch_pause(*, project: Project, user: User, paused: bool) -> Project:
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
