"""Every write to model versions, promotions and deployments.

``promotion_transition`` is the only code that changes a promotion's status.
An approval moves the MLflow alias and records the deployment: both or neither.
"""

from __future__ import annotations

import itertools
import logging
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from controlplane import tracking
from controlplane.accounts.models import Role, User
from controlplane.accounts.selectors import project_role_check
from controlplane.errors import Conflict, Forbidden, ServiceUnavailable, ValidationFailed
from controlplane.naming import name_check
from controlplane.registry import hooks
from controlplane.registry.models import (
    Deployment,
    ModelVersion,
    Promotion,
    PromotionEvent,
    PromotionStatus,
    Target,
)
from controlplane.training.models import Job, JobKind, JobStatus

log = logging.getLogger(__name__)


def model_version_create(*, job: Job, user: User, name: str) -> ModelVersion:
    """Register a succeeded job's trained artifact as the next version of model ``name``.

    Registering the same job under the same name again returns the version it already has.
    """
    version, _ = model_version_get_or_create(job=job, user=user, name=name)
    return version


def model_version_get_or_create(*, job: Job, user: User, name: str) -> tuple[ModelVersion, bool]:
    """``model_version_create``, and whether the version is new (False: the job had it already)."""
    project_role_check(user=user, project=job.project, role=Role.MEMBER)
    name_check(name, what="model")
    existing = _model_version_of(job=job, name=name)
    if existing is not None:
        return existing, False
    if job.kind != JobKind.FINETUNE:
        raise Conflict(
            f"Job {job.pk} is an evaluation and trained no model; register the finetune it evaluated."
            if job.kind == JobKind.EVALUATE
            else f"Job {job.pk} drives a sweep and trained no model; register one of its trials' jobs."
        )
    if job.status != JobStatus.SUCCEEDED:
        raise Conflict(f"Only a succeeded job can be registered; job {job.pk} is {job.status}.")
    # A whole model where the job saved one (full fine-tuning, or an adapter merged
    # into its base for export); otherwise the adapter.
    source = job.artifacts.get("model") or job.artifacts.get("adapter")
    if not source:
        raise Conflict(f"Job {job.pk} produced no model artifact to register.")
    mlflow_name = f"{job.project.slug}.{name}"
    # Outside any transaction: a network call.
    version = tracking.model_version_register(
        name=mlflow_name, source=source, run_id=job.mlflow_run_id or None
    )
    # MLflow numbers versions atomically; we keep its number.
    try:
        with transaction.atomic():
            # Two registrations of one job racing past the check above both reach MLflow;
            # the job's row lock (SQLite: its one writer) makes the second find the first's here.
            Job.objects.select_for_update().get(pk=job.pk)
            winner = _model_version_of(job=job, name=name)
            if winner is None:
                created = ModelVersion.objects.create(
                    project=job.project,
                    name=name,
                    version=version,
                    job=job,
                    source_uri=source,
                    mlflow_name=mlflow_name,
                    created_by=user,
                )
                return created, True
    except IntegrityError as exc:
        # Our registry already has this number: MLflow's registry was reset or is shared.
        raise Conflict(
            f"MLflow numbered this {mlflow_name} version {version}, which Tuneyard already has; "
            "its model registry does not match this control plane."
        ) from exc
    log.warning(
        "%s version %s in MLflow duplicates %s, registered from job %s at the same moment; nothing uses it",
        mlflow_name,
        version,
        winner,
        job.pk,
    )
    return winner, False


def _model_version_of(*, job: Job, name: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(job=job, name=name).order_by("version").first()


def promotion_request(
    *, model_version: ModelVersion, user: User, target: str, comment: str = ""
) -> Promotion:
    project_role_check(user=user, project=model_version.project, role=Role.MEMBER)
    if target not in Target.values:
        raise ValidationFailed(f"Unknown target {target!r}; choose one of {', '.join(Target.values)}.")
    try:
        with transaction.atomic():
            promotion = Promotion.objects.create(
                model_version=model_version, target=target, requested_by=user, comment=comment
            )
            PromotionEvent.objects.create(
                promotion=promotion,
                actor=user,
                to_status=PromotionStatus.REQUESTED,
                comment=comment,
            )
            hooks.promotion_changed(promotion.pk, PromotionStatus.REQUESTED)
    except IntegrityError as exc:
        raise Conflict(f"{model_version} already has an open request for {target}.") from exc
    return promotion


def promotion_transition(
    *,
    promotion_id: int,
    from_status: PromotionStatus,
    to: PromotionStatus,
    actor: User,
    comment: str = "",
    **fields: Any,
) -> bool:
    """Move a promotion from ``from_status`` to ``to``; False if someone else moved it first.

    Must run inside the caller's transaction when other rows change with it.
    """
    with transaction.atomic():
        won = Promotion.objects.filter(pk=promotion_id, status=from_status).update(status=to, **fields)
        if won:
            PromotionEvent.objects.create(
                promotion_id=promotion_id,
                actor=actor,
                from_status=from_status,
                to_status=to,
                comment=comment,
            )
            hooks.promotion_changed(promotion_id, to)
    return bool(won)


def _decider_check(promotion: Promotion, user: User) -> None:
    project_role_check(user=user, project=promotion.model_version.project, role=Role.APPROVER)
    if promotion.requested_by_id == user.pk:
        raise Forbidden("You cannot decide on your own promotion request; another approver must.")
    if promotion.status != PromotionStatus.REQUESTED:
        raise Conflict(f"This promotion is already {promotion.status}.")


def promotion_approve(*, promotion: Promotion, user: User, comment: str = "") -> Deployment:
    """Approve: point the MLflow alias at the version and record the deployment, both or neither.

    The decision is claimed first (REQUESTED -> APPROVING, committed), so of two
    approvals racing only one ever touches MLflow. Then the alias moves (a
    network call, outside any transaction), then APPROVED and the deployment
    row commit together. If anything after the claim fails, the request is
    reopened and the alias is made to agree with the committed deployment.
    """
    _decider_check(promotion, user)
    version = promotion.model_version
    claimed = promotion_transition(
        promotion_id=promotion.pk,
        from_status=PromotionStatus.REQUESTED,
        to=PromotionStatus.APPROVING,
        actor=user,
        comment=comment,
    )
    if not claimed:
        raise Conflict("This promotion was decided by someone else a moment ago.")
    try:
        tracking.alias_set(name=version.mlflow_name, alias=promotion.target, version=version.version)
        now = timezone.now()
        with transaction.atomic():
            # Cannot lose: no one else moves a promotion out of APPROVING.
            promotion_transition(
                promotion_id=promotion.pk,
                from_status=PromotionStatus.APPROVING,
                to=PromotionStatus.APPROVED,
                actor=user,
                comment=comment,
                decided_by=user,
                decided_at=now,
                decision_comment=comment,
            )
            deployment, _ = Deployment.objects.update_or_create(
                project=version.project,
                model_name=version.name,
                target=promotion.target,
                defaults={
                    "model_version": version,
                    "promotion": promotion,
                    "approved_by": user,
                    "approved_at": now,
                },
            )
    except Exception:
        promotion_transition(
            promotion_id=promotion.pk,
            from_status=PromotionStatus.APPROVING,
            to=PromotionStatus.REQUESTED,
            actor=user,
            comment="the approval failed; the request is open again",
        )
        _alias_sync(version)
        raise
    # Again from the committed row: narrows the window in which a concurrent
    # approval of another version could leave MLflow pointing elsewhere.
    _alias_sync(version)
    promotion.refresh_from_db()
    return deployment


def _alias_sync(version: ModelVersion) -> None:
    """Point the MLflow aliases of ``version``'s model at what the database says is deployed."""
    deployed = {
        d.target: d.model_version.version
        for d in Deployment.objects.filter(project=version.project, model_name=version.name).select_related(
            "model_version"
        )
    }
    for target in Target.values:
        try:
            if target in deployed:
                tracking.alias_set(name=version.mlflow_name, alias=target, version=deployed[target])
            elif tracking.alias_get(name=version.mlflow_name, alias=target) is not None:
                tracking.alias_delete(name=version.mlflow_name, alias=target)
        except ServiceUnavailable:
            # Never hide the error that brought us here; the mismatch is logged loudly.
            log.error(
                "MLflow alias %s@%s could not be synced with the deployments", version.mlflow_name, target
            )


def promotion_reject(*, promotion: Promotion, user: User, comment: str = "") -> Promotion:
    _decider_check(promotion, user)
    won = promotion_transition(
        promotion_id=promotion.pk,
        from_status=PromotionStatus.REQUESTED,
        to=PromotionStatus.REJECTED,
        actor=user,
        comment=comment,
        decided_by=user,
        decided_at=timezone.now(),
        decision_comment=comment,
    )
    if not won:
        raise Conflict("This promotion was decided by someone else a moment ago.")
    promotion.refresh_from_db()
    return promotion


def registry_reconcile(*, stuck_after_seconds: int = 300) -> dict[str, int]:
    """Heal what a crash in the middle of an approval can leave behind.

    An approval stuck in APPROVING (its process died between claiming and
    committing) is reopened, and every deployed model's MLflow aliases are set
    from the committed deployments, closing the window in which two approvals
    of different versions could leave the alias pointing at the older one.
    """
    cutoff = timezone.now() - timedelta(seconds=stuck_after_seconds)
    reopened = 0
    stuck = PromotionEvent.objects.filter(
        to_status=PromotionStatus.APPROVING, at__lt=cutoff, promotion__status=PromotionStatus.APPROVING
    ).select_related("actor")
    for event in stuck:
        reopened += promotion_transition(
            promotion_id=event.promotion_id,
            from_status=PromotionStatus.APPROVING,
            to=PromotionStatus.REQUESTED,
            actor=event.actor,
            comment="the approval did not finish; the request is open again",
        )
    synced = 0
    deployments = Deployment.objects.select_related("model_version__project").order_by(
        "project", "model_name"
    )
    for _, group in itertools.groupby(deployments, key=lambda d: (d.project_id, d.model_name)):
        _alias_sync(next(group).model_version)
        synced += 1
    return {"reopened": reopened, "models_synced": synced}
