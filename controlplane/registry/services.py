"""Every write to model versions, promotions (requests, rollbacks, comments) and deployments.

``promotion_transition`` is the only code that changes a promotion's status.
An approval moves the MLflow alias and records the deployment: both or neither.
A rollback is a promotion too (kind ROLLBACK), governed the same way; only an
admin's emergency rollback, with a written reason, skips the second approver.
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
    PromotionComment,
    PromotionEvent,
    PromotionKind,
    PromotionStatus,
    Target,
)
from controlplane.training.models import Job, JobKind, JobStatus

log = logging.getLogger(__name__)
# As PromotionComment.body allows.
COMMENT_MAX_CHARS = 5000


def model_version_create(*, job: Job, user: User, name: str) -> ModelVersion:
    """Register a succeeded job's trained artifact as the next version of model ``name``.

    A job's result is registered once: registering the same job under the same name again
    returns the version it already has, and under another name is refused.
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
            winner = _model_version_of(job=job, name=name, checked=False)
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
    if winner.name != name:
        raise Conflict(
            f"Job {job.pk} was registered as {winner} (model version {winner.pk}) a moment ago; "
            "a job's result is registered once."
        )
    return winner, False


def _model_version_of(*, job: Job, name: str, checked: bool = True) -> ModelVersion | None:
    """The version ``job`` was registered as under ``name``; a Conflict if it was under another
    (unless ``checked`` is False: then that other version is returned as it is)."""
    versions = ModelVersion.objects.filter(job=job)
    mine = versions.filter(name=name).order_by("version").first()
    if mine is not None:
        return mine
    other = versions.order_by("pk").first()
    if other is not None and checked:
        # Two versions of one source could be promoted apart and confuse what "deployed" means.
        raise Conflict(
            f"Job {job.pk} is registered already, as {other} (model version {other.pk}); "
            "a job's result is registered once."
        )
    return other


def promotion_request(
    *,
    model_version: ModelVersion,
    user: User,
    target: str,
    comment: str = "",
    kind: PromotionKind = PromotionKind.PROMOTE,
) -> Promotion:
    project_role_check(user=user, project=model_version.project, role=Role.MEMBER)
    if target not in Target.values:
        raise ValidationFailed(f"Unknown target {target!r}; choose one of {', '.join(Target.values)}.")
    try:
        with transaction.atomic():
            promotion = Promotion.objects.create(
                model_version=model_version, target=target, requested_by=user, comment=comment, kind=kind
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


def rollback_request(*, model_version: ModelVersion, user: User, target: str, comment: str = "") -> Promotion:
    """Ask to put ``target`` back on ``model_version``, which was deployed there before.

    A rollback is governed like any promotion: another approver decides it.
    """
    project_role_check(user=user, project=model_version.project, role=Role.MEMBER)
    _rollback_check(model_version, target)
    return promotion_request(
        model_version=model_version, user=user, target=target, comment=comment, kind=PromotionKind.ROLLBACK
    )


def rollback_emergency(
    *, model_version: ModelVersion, user: User, target: str, reason: str
) -> tuple[Promotion, Deployment]:
    """An admin puts ``target`` back on an earlier version now, without a second approver.

    Requested and approved by the same admin, with the written reason kept as the
    override and in the audit trail. If the approval fails (MLflow away), the
    rollback stays as an open request that an approver can still decide.
    """
    reason = reason.strip()
    project_role_check(user=user, project=model_version.project, role=Role.ADMIN)
    if not reason:
        raise ValidationFailed("An emergency rollback needs a written reason; it is kept in the audit trail.")
    _rollback_check(model_version, target)
    promotion = promotion_request(
        model_version=model_version,
        user=user,
        target=target,
        comment=f"emergency rollback: {reason}",
        kind=PromotionKind.ROLLBACK,
    )
    deployment = _approve(promotion, user, comment=f"emergency rollback: {reason}", override_reason=reason)
    promotion.refresh_from_db()
    return promotion, deployment


def _rollback_check(model_version: ModelVersion, target: str) -> None:
    """A rollback goes back to a version the target ran before, and not to the one it runs now."""
    if target not in Target.values:
        raise ValidationFailed(f"Unknown target {target!r}; choose one of {', '.join(Target.values)}.")
    current = Deployment.objects.filter(
        project=model_version.project, model_name=model_version.name, target=target
    ).first()
    if current is not None and current.model_version_id == model_version.pk:
        raise Conflict(f"{model_version} is what {target} runs now; there is nothing to roll back.")
    was_deployed = Promotion.objects.filter(
        model_version=model_version, target=target, status=PromotionStatus.APPROVED
    ).exists()
    if not was_deployed:
        raise Conflict(
            f"{model_version} was never deployed to {target}; a rollback goes back to a version "
            f"that {target} ran before. Ask for a promotion instead."
        )


def promotion_withdraw(*, promotion: Promotion, user: User, comment: str = "") -> Promotion:
    """The person who asked takes an undecided request back."""
    project_role_check(user=user, project=promotion.model_version.project, role=Role.VIEWER)
    if promotion.requested_by_id != user.pk:
        raise Forbidden("Only the person who asked for this promotion can withdraw it.")
    if promotion.status != PromotionStatus.REQUESTED:
        raise Conflict(
            f"This promotion is already {promotion.status}; only an open request can be withdrawn."
        )
    return _request_close(promotion, user=user, to=PromotionStatus.WITHDRAWN, comment=comment)


def promotion_comment_add(*, promotion: Promotion, user: User, body: str) -> PromotionComment:
    """A remark on a request, open or decided, by anyone who can read it."""
    project_role_check(user=user, project=promotion.model_version.project, role=Role.VIEWER)
    body = body.strip()
    if not body:
        raise ValidationFailed("body: a comment cannot be empty.")
    if len(body) > COMMENT_MAX_CHARS:
        raise ValidationFailed(f"body: a comment is at most {COMMENT_MAX_CHARS} characters.")
    return PromotionComment.objects.create(promotion=promotion, author=user, body=body)


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


def promotion_approve(
    *, promotion: Promotion, user: User, comment: str = "", override_reason: str = ""
) -> Deployment:
    """Approve: point the MLflow alias at the version and record the deployment, both or neither.

    What the gates hold against the promotion (``hooks.approval_blockers``) refuses
    it, unless a project admin approves with a written ``override_reason``, which is
    kept on the promotion and in its audit trail. Four eyes hold either way.
    """
    _decider_check(promotion, user)
    override_reason = override_reason.strip()
    # Read before the claim, from committed data: a claimed promotion shows as "approving"
    # to everyone else, and a refusal must leave nothing behind.
    blockers = hooks.approval_blockers(promotion)
    if not blockers:
        override_reason = ""  # nothing stood in the way: nothing was overridden
    elif not override_reason:
        raise Conflict(
            "This promotion cannot be approved: " + " ".join(blockers) + " A project admin may approve "
            "it anyway with a written override reason.",
            details={"blockers": blockers},
        )
    elif not project_role_check(
        user=user, project=promotion.model_version.project, role=Role.APPROVER
    ).includes(Role.ADMIN):
        raise Forbidden(
            "Only a project admin can approve past a failing gate: " + " ".join(blockers),
            details={"blockers": blockers},
        )
    audit = "\n".join(
        part for part in (f"override: {override_reason}" if override_reason else "", comment) if part
    )
    return _approve(promotion, user, comment=audit, override_reason=override_reason, decision_comment=comment)


def _approve(
    promotion: Promotion,
    user: User,
    *,
    comment: str,
    override_reason: str = "",
    decision_comment: str | None = None,
) -> Deployment:
    """The approval itself, once who may approve is settled.

    The decision is claimed first (REQUESTED -> APPROVING, committed), so of two
    approvals racing only one ever touches MLflow. Then the alias moves (a
    network call, outside any transaction), then APPROVED and the deployment
    row commit together. If anything after the claim fails, the request is
    reopened and the alias is made to agree with the committed deployment.
    """
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
                decision_comment=comment if decision_comment is None else decision_comment,
                override_reason=override_reason,
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
    return _request_close(promotion, user=user, to=PromotionStatus.REJECTED, comment=comment, decides=True)


def _request_close(
    promotion: Promotion, *, user: User, to: PromotionStatus, comment: str, decides: bool = False
) -> Promotion:
    """Close an open request as ``to`` (rejected by a decider, or withdrawn by its requester)."""
    won = promotion_transition(
        promotion_id=promotion.pk,
        from_status=PromotionStatus.REQUESTED,
        to=to,
        actor=user,
        comment=comment,
        decided_at=timezone.now(),
        decision_comment=comment,
        **({"decided_by": user} if decides else {}),
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
