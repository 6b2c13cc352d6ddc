"""What webhooks hears from the apps below it, turned into outbox events.

Each event has a key naming what happened, so the same news heard twice (a hook,
then the reconciler) is one event, and news that repeats for real (a second
attempt that fails too, a sweep given more trials that finishes again) is not.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

from controlplane.registry.models import Promotion, PromotionStatus
from controlplane.sweeps.models import Sweep, SweepStatus
from controlplane.training.models import Job, JobEvent, JobStatus
from controlplane.webhooks.models import Endpoint, Event, EventType
from controlplane.webhooks.services import event_emit

_JOB_EVENTS = {
    JobStatus.SUCCEEDED: EventType.JOB_SUCCEEDED,
    JobStatus.FAILED: EventType.JOB_FAILED,
    JobStatus.CANCELLED: EventType.JOB_CANCELLED,
}
_PROMOTION_EVENTS = {
    PromotionStatus.REQUESTED: EventType.PROMOTION_REQUESTED,
    PromotionStatus.APPROVED: EventType.PROMOTION_APPROVED,
    PromotionStatus.REJECTED: EventType.PROMOTION_REJECTED,
}
# How far back the reconciler looks for news the hooks may have missed (a crash after commit).
RECONCILE_WINDOW = timedelta(hours=24)


def _subscribed(project_id: int) -> bool:
    # Listeners run for every job and promotion: most projects have no endpoint.
    return Endpoint.objects.filter(project_id=project_id, enabled=True).exists()


def job_data(job: Job) -> dict[str, Any]:
    return {
        "job": {
            "id": job.pk,
            "name": job.name,
            "project": job.project.slug,
            "kind": job.kind,
            "status": job.status,
            "attempt": job.attempt,
            "created_by": job.created_by.username,
            "dataset_version_id": job.dataset_version_id,
            "base_model": job.base_model.name,
            "source_job_id": job.source_job_id,
            "metrics": job.metrics,
            "error": job.error[:1000],
            "mlflow_run_id": job.mlflow_run_id,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        }
    }


def job_finished(job_id: int) -> None:
    job = Job.objects.select_related("project", "created_by", "base_model").filter(pk=job_id).first()
    if job is None or job.status not in _JOB_EVENTS or not _subscribed(job.project_id):
        return
    data = job_data(job)
    key = f"job:{job.pk}:{job.attempt}"
    event_emit(
        project=job.project, type=_JOB_EVENTS[JobStatus(job.status)], key=f"{key}:{job.status}", data=data
    )
    if job.is_evaluation and job.status == JobStatus.SUCCEEDED:
        event_emit(project=job.project, type=EventType.EVALUATION_FINISHED, key=f"{key}:evaluated", data=data)
    # The sweeps app heard of this job first (it is earlier in INSTALLED_APPS): if it was the last
    # trial, or the Ray driver, the sweep is finished by now.
    sweep = Sweep.objects.filter(Q(trials__job_id=job_id) | Q(driver_job_id=job_id)).first()
    if sweep is not None:
        sweep_finished(sweep)


def sweep_finished(sweep: Sweep) -> None:
    if not SweepStatus(sweep.status).is_finished():
        return
    data = {
        "sweep": {
            "id": sweep.pk,
            "name": sweep.name,
            "project": sweep.project.slug,
            "status": sweep.status,
            "stop_reason": sweep.stop_reason,
            "trials_launched": sweep.trials_launched,
            "objective_metric": sweep.objective_metric,
            "direction": sweep.direction,
        }
    }
    # A sweep given more trials runs again and finishes again: a new event then.
    key = f"sweep:{sweep.pk}:{sweep.status}:{sweep.trials_launched}"
    event_emit(project=sweep.project, type=EventType.SWEEP_FINISHED, key=key, data=data)


def promotion_data(promotion: Promotion) -> dict[str, Any]:
    version = promotion.model_version
    return {
        "promotion": {
            "id": promotion.pk,
            "project": version.project.slug,
            "status": promotion.status,
            "target": promotion.target,
            "model_version": {
                "id": version.pk,
                "name": version.name,
                "mlflow_name": version.mlflow_name,
                "mlflow_version": version.version,
                "mlflow_uri": version.mlflow_uri,
                "job_id": version.job_id,
            },
            "requested_by": promotion.requested_by.username,
            "comment": promotion.comment,
            "decided_by": promotion.decided_by.username if promotion.decided_by else None,
            "decision_comment": promotion.decision_comment,
        }
    }


def promotion_changed(promotion_id: int, status: PromotionStatus) -> None:
    """Inside the registry's transaction: the events commit (or roll back) with the decision."""
    if status not in _PROMOTION_EVENTS:
        return
    promotion = Promotion.objects.select_related("model_version__project", "requested_by", "decided_by").get(
        pk=promotion_id
    )
    project = promotion.model_version.project
    if not _subscribed(project.pk):
        return
    data = promotion_data(promotion)
    key = f"promotion:{promotion_id}:{status}"
    event_emit(project=project, type=_PROMOTION_EVENTS[status], key=key, data=data)
    if status == PromotionStatus.APPROVED:
        # The deployment row is written next in the same transaction; what it will say is this.
        version = promotion.model_version
        deployment = {
            "project": project.slug,
            "target": promotion.target,
            "model_name": version.name,
            "model_version_id": version.pk,
            "mlflow_version": version.version,
            "mlflow_uri": version.mlflow_uri,
            "promotion_id": promotion.pk,
            "approved_by": promotion.decided_by.username if promotion.decided_by else None,
        }
        event_emit(
            project=project,
            type=EventType.DEPLOYMENT_CHANGED,
            key=f"deployment:{project.pk}:{version.name}:{promotion.target}:{promotion.pk}",
            data={"deployment": deployment},
        )


def events_reconcile() -> int:
    """Emit what the hooks may have missed in the last day (a crash between a commit and its hook)."""
    since = timezone.now() - RECONCILE_WINDOW
    projects = Endpoint.objects.filter(enabled=True).values("project_id")
    emitted = 0
    # From the audit rows, which every status change writes in its own transaction.
    endings = JobEvent.objects.filter(
        job__project__in=projects, to_status__in=list(_JOB_EVENTS), at__gte=since
    ).values_list("job_id", "attempt", "to_status")
    seen = set(Event.objects.filter(created_at__gte=since - RECONCILE_WINDOW).values_list("key", flat=True))
    for job_id, attempt, status in endings:
        if f"job:{job_id}:{attempt}:{status}" not in seen:
            job_finished(job_id)
            emitted += 1
    for sweep in Sweep.objects.filter(
        project__in=projects,
        status__in=[SweepStatus.FINISHED, SweepStatus.STOPPED],
        created_at__gte=since - timedelta(days=6),
    ).select_related("project"):
        if f"sweep:{sweep.pk}:{sweep.status}:{sweep.trials_launched}" not in seen:
            sweep_finished(sweep)
            emitted += 1
    return emitted
