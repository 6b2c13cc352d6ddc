"""The model card written when a promotion is approved (Markdown and JSON), and its reads.

The card is built in the approval's transaction from committed rows only: the
model version and its training job, the base model, the dataset versions with
their hashes and check reports, the suite runs of the challenger and of the
champion it replaces, the review votes, the gate's kept verdict and who asked
and decided. Each cited row is referenced by its digest (a suite run's and a
gate check's own, a dataset version's content hash, the SHA-256 of the
canonical JSON of what is cited for the others), and the card itself carries
the SHA-256 of its canonical JSON: the card proves what the approver saw.

It is written once (one card per promotion; a second call changes nothing)
and never updated. MLflow gets it on commit, beside the registered version;
``model_cards_publish`` sends again whatever MLflow did not take.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Q

from controlplane import tracking
from controlplane.accounts.models import Project, Role, User
from controlplane.accounts.selectors import project_role_check
from controlplane.datasets.models import DatasetOperation, DatasetVersion, OperationKind, OperationStatus
from controlplane.errors import NotFound, ServiceUnavailable, ValidationFailed
from controlplane.evidence import card_markdown, suite_results
from controlplane.evidence.digests import digest_of, json_safe
from controlplane.evidence.models import GateCheck, ModelCard, ReviewVote, SuiteRun
from controlplane.registry.models import Deployment, Promotion, PromotionStatus, Target

log = logging.getLogger(__name__)

# The layout of ``ModelCard.data``; raised when a field changes meaning.
CARD_SCHEMA = 1
NOT_RECORDED = "not recorded"
# The worker's run tags that name library versions (workers.tracking.LIBRARY_TAG_PREFIX).
LIBRARY_TAG_PREFIX = "tuneyard.library."
# The dataset checks a card reports, in the order it shows them.
CHECK_KINDS = (OperationKind.CONTAMINATION, OperationKind.PII_SCAN, OperationKind.DEDUP)


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# --- the listener ------------------------------------------------------------------------------

# Library versions read from the training run's tags when the decision is claimed, by promotion
# id: MLflow is only reached outside a transaction, and the card is written inside one. A
# decision is claimed and made by the same process, one after the other; one that did not read
# them here (MLflow away, or another process) says "not recorded".
_libraries_read: dict[int, dict[str, str]] = {}


def promotion_changed(promotion_id: int, status: PromotionStatus) -> None:
    """On approval, write the card in the approval's transaction (MLflow gets it on commit)."""
    if status == PromotionStatus.APPROVING:
        transaction.on_commit(lambda: _libraries_read_now(promotion_id))
    elif status == PromotionStatus.APPROVED:
        model_card_write(promotion_id=promotion_id, libraries=_libraries_read.pop(promotion_id, None))
    else:
        _libraries_read.pop(promotion_id, None)


def _libraries_read_now(promotion_id: int) -> None:
    """After the claim commits (no transaction open): the training run's library tags."""
    run_id = (
        Promotion.objects.filter(pk=promotion_id)
        .values_list("model_version__job__mlflow_run_id", flat=True)
        .first()
    )
    if not run_id:
        return
    try:
        tags = tracking.run_tags(run_id)
    except ServiceUnavailable as exc:
        log.warning(
            "promotion %s: the training run's library versions could not be read: %s", promotion_id, exc
        )
        return
    _libraries_read[promotion_id] = libraries_from_tags(tags)


def libraries_from_tags(tags: dict[str, str]) -> dict[str, str]:
    return {
        key.removeprefix(LIBRARY_TAG_PREFIX): value
        for key, value in sorted(tags.items())
        if key.startswith(LIBRARY_TAG_PREFIX)
    }


# --- writing the card ----------------------------------------------------------------------------


def model_card_write(*, promotion_id: int, libraries: dict[str, str] | None = None) -> ModelCard:
    """The promotion's card: written now from committed rows, or the one it has already.

    Call inside the approval's transaction, after the gate's verdict is kept.
    ``libraries``: the training run's library versions, read beforehand (None: not recorded).
    """
    with transaction.atomic():
        # The promotion's row lock: of two writers, the second finds the first's card.
        promotion = (
            Promotion.objects.select_for_update(of=("self",))
            .select_related(
                "model_version__project",
                "model_version__job__base_model",
                "model_version__job__dataset_version__dataset",
                "requested_by",
                "decided_by",
            )
            .get(pk=promotion_id)
        )
        existing = ModelCard.objects.filter(promotion=promotion).first()
        if existing is not None:
            return existing
        data = json_safe(model_card_data(promotion=promotion, libraries=libraries))
        card = ModelCard.objects.create(
            promotion=promotion,
            data=data,
            markdown=card_markdown.model_card_markdown(data),
            digest=digest_of(data),
        )
        card_id = card.pk
        transaction.on_commit(lambda: model_card_publish(card_id=card_id))
    return card


def model_card_data(*, promotion: Promotion, libraries: dict[str, str] | None) -> dict[str, Any]:
    """The card's content from the rows as they are committed now: the same rows give the same card."""
    version = promotion.model_version
    job = version.job
    # The suites' own notion of the champion, so the card's figures and its champion agree.
    champion = suite_results.promotion_champion(promotion)
    config = job.config or {}
    method = config.get("method") or {}
    return {
        "schema": CARD_SCHEMA,
        "project": version.project.slug,
        "model": {
            "id": version.pk,
            "name": version.name,
            "mlflow_name": version.mlflow_name,
            "mlflow_version": version.version,
            "mlflow_uri": version.mlflow_uri,
            "source_uri": version.source_uri,
            "registered_at": _when(version.created_at),
        },
        "promotion": {
            "id": promotion.pk,
            "kind": promotion.kind,
            "target": promotion.target,
            "requested_by": promotion.requested_by.username,
            "requested_at": _when(promotion.requested_at),
            "comment": promotion.comment,
            "approved_by": promotion.decided_by.username if promotion.decided_by else None,
            "approved_at": _when(promotion.decided_at),
            "decision_comment": promotion.decision_comment,
            "override_reason": promotion.override_reason,
        },
        "champion": (
            {
                "id": champion.pk,
                "name": champion.name,
                "mlflow_version": champion.version,
                "mlflow_uri": champion.mlflow_uri,
            }
            if champion is not None
            else None
        ),
        "base_model": {"name": job.base_model.name, "uri": job.base_model.uri},
        "training": {
            "job": job.pk,
            "kind": job.kind,
            "method": method.get("name") if isinstance(method, dict) else None,
            "hyperparameters": config.get("hyperparameters") or {},
            "config": config,
            "metrics": job.metrics or {},
            "mlflow_run_id": job.mlflow_run_id or None,
            "finished_at": _when(job.finished_at),
        },
        "datasets": [_dataset_entry(job.dataset_version, role="train")],
        "suites": _suites_entry(promotion),
        "review": _review_entry(promotion),
        "gate": _gate_entry(promotion),
        "libraries": dict(sorted(libraries.items())) if libraries else NOT_RECORDED,
    }


def _dataset_entry(version: DatasetVersion, *, role: str) -> dict[str, Any]:
    operations = (
        DatasetOperation.objects.filter(
            Q(kind=OperationKind.CONTAMINATION, options__train_version=version.pk)
            | Q(kind=OperationKind.PII_SCAN, source_version=version)
            | Q(kind=OperationKind.DEDUP, source_version=version)
            | Q(kind=OperationKind.DEDUP, version=version),
            status__in=[OperationStatus.SUCCEEDED, OperationStatus.FAILED],
        )
        .select_related("source_version__dataset")
        .order_by("pk")
    )
    checks = []
    for operation in operations:
        cited = {
            "id": operation.pk,
            "kind": operation.kind,
            "status": operation.status,
            "of": str(operation.source_version) if operation.source_version else None,
            "options": operation.options,
            "result": operation.result,
            "message": operation.message,
            "finished_at": _when(operation.finished_at),
        }
        checks.append({**cited, "digest": digest_of(cited)})
    checks.sort(key=lambda check: (CHECK_KINDS.index(OperationKind(check["kind"])), check["id"]))
    return {
        "role": role,
        "id": version.pk,
        "name": version.dataset.name,
        "version": version.version,
        "format": version.format,
        "rows": version.row_count,
        "sha256": version.sha256,
        "uri": version.uri,
        "derivation": version.derivation,
        "checks": checks,
    }


def _suite_run_entry(run: SuiteRun | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "id": run.pk,
        "status": run.status,
        "results": run.results,
        "digest": run.digest,
        "finished_at": _when(run.finished_at),
    }


def _suites_entry(promotion: Promotion) -> list[dict[str, Any]]:
    """Each suite the promotion was judged on, with the challenger's and the champion's runs: the
    ones the kept gate check cites, else the model's current suites (what the promotion page shows)."""
    entries = []
    for suite, ours, theirs in suite_results.promotion_runs(promotion):
        entries.append(
            {
                "suite": suite.name,
                "version": suite.version,
                "suite_digest": suite.digest,
                "seed": suite.seed,
                "challenger": _suite_run_entry(ours),
                "champion": _suite_run_entry(theirs),
                "comparison": _comparison(
                    ours.results if ours is not None else {}, theirs.results if theirs is not None else None
                ),
            }
        )
    entries.sort(key=lambda entry: (entry["suite"], entry["version"]))
    return entries


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _comparison(ours: dict, theirs: dict | None) -> list[dict[str, Any]]:
    """One row per (task, metric) the challenger has: its figure, the champion's and the difference."""
    rows = []
    for task in sorted(ours or {}):
        metrics = ours[task] if isinstance(ours[task], dict) else {}
        their_metrics = (theirs or {}).get(task) or {}
        for metric in sorted(metrics):
            mine, other = _number(metrics[metric]), _number(their_metrics.get(metric))
            rows.append(
                {
                    "task": task,
                    "metric": metric,
                    "challenger": metrics[metric],
                    "champion": their_metrics.get(metric),
                    "delta": round(mine - other, 6) if mine is not None and other is not None else None,
                }
            )
    return rows


def review_votes_cited(promotion: Promotion) -> list[dict[str, Any]]:
    """The promotion's blind-review votes as the card cites them (and digests them)."""
    return [
        {
            "task": vote.task,
            "row": vote.row,
            "voter": vote.voter.username,
            "challenger_side": vote.challenger_side,
            "vote": vote.vote,
            "at": _when(vote.at),
        }
        for vote in ReviewVote.objects.filter(promotion=promotion)
        .select_related("voter")
        .order_by("task", "row", "voter__username", "pk")
    ]


def _review_entry(promotion: Promotion) -> dict[str, Any]:
    votes = review_votes_cited(promotion)
    wins = sum(1 for v in votes if v["vote"] == v["challenger_side"])
    ties = sum(1 for v in votes if v["vote"] == "tie")
    return {
        "votes": len(votes),
        "challenger_wins": wins,
        "champion_wins": len(votes) - wins - ties,
        "ties": ties,
        "challenger_win_rate": round((wins + ties / 2) / len(votes), 4) if votes else None,
        "voters": sorted({v["voter"] for v in votes}),
        "digest": digest_of(votes),
    }


def _gate_entry(promotion: Promotion) -> dict[str, Any] | None:
    check = GateCheck.objects.filter(promotion=promotion).first()
    if check is None:
        return None
    return {
        "passed": check.passed,
        "results": check.results,
        "digest": check.digest,
        "checked_at": _when(check.checked_at),
        "override_reason": promotion.override_reason,
    }


# --- MLflow --------------------------------------------------------------------------------------


def model_card_publish(*, card_id: int) -> bool:
    """Send the card to MLflow beside its model version; False (and a loud log) when MLflow failed.

    Runs on commit, outside any transaction. Safe to run again: ``model_cards_publish`` does.
    """
    card = ModelCard.objects.select_related("promotion__model_version__job").filter(pk=card_id).first()
    if card is None:
        return False
    version = card.promotion.model_version
    try:
        tracking.model_card_log(
            name=version.mlflow_name,
            version=version.version,
            run_id=version.job.mlflow_run_id or None,
            card_key=f"promotion-{card.promotion_id}",
            markdown=card.markdown,
            data=card.data,
            digest=card.digest,
        )
    except ServiceUnavailable as exc:
        log.error(
            "The model card of promotion %s (%s) did not reach MLflow: %s. "
            "`manage.py model_cards_publish` sends it again.",
            card.promotion_id,
            version,
            exc,
        )
        return False
    return True


def model_cards_publish(*, since: datetime | None = None) -> dict[str, int]:
    """Send every card (written ``since``) that MLflow does not hold yet; counts what went and failed."""
    cards = ModelCard.objects.order_by("pk")
    if since is not None:
        cards = cards.filter(created_at__gte=since)
    sent = failed = 0
    for card_id in cards.values_list("pk", flat=True):
        if model_card_publish(card_id=card_id):
            sent += 1
        else:
            failed += 1
    return {"checked": sent + failed, "failed": failed}


# --- reads ---------------------------------------------------------------------------------------


def model_card_of_promotion(*, user: User, promotion_id: int, project: Project | None = None) -> ModelCard:
    """The card of a promotion the user may read (in ``project`` when given); NotFound when none yet."""
    card = (
        ModelCard.objects.select_related("promotion__model_version__project")
        .filter(promotion_id=promotion_id)
        .first()
    )
    if card is None:
        # Not found whether there is no such promotion, no card yet, or no right to know.
        raise NotFound("Not found.")
    card_project = card.promotion.model_version.project
    if project is not None and project.pk != card_project.pk:
        raise NotFound("Not found.")
    project_role_check(user=user, project=card_project, role=Role.VIEWER)
    return card


def model_card_of_deployment(*, user: User, project: Project, model_name: str, target: str) -> ModelCard:
    """The card of what is deployed now to ``target`` for ``model_name`` of ``project``."""
    project_role_check(user=user, project=project, role=Role.VIEWER)
    if target not in Target.values:
        raise ValidationFailed(f"Unknown target {target!r}; choose one of {', '.join(Target.values)}.")
    deployment = Deployment.objects.filter(project=project, model_name=model_name, target=target).first()
    if deployment is None:
        raise NotFound(f"Nothing of model {model_name!r} is deployed to {target} in this project.")
    card = ModelCard.objects.filter(promotion_id=deployment.promotion_id).select_related("promotion").first()
    if card is None:
        raise NotFound(
            f"The deployment of {model_name!r} to {target} has no model card (approved before cards)."
        )
    return card
