"""The registry's pages, composed here because they show the evidence beside it (which the registry
must not import): a registered model (versions, champion and history per target, suite results over
versions, rollback), a version with its lineage drawn from dataset versions to deployments, and a
promotion request with what its approver decides on (suites, gates, blind review, the card), its
comments and its audit trail."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import HttpResponse
from django.shortcuts import render

from controlplane.accounts.models import Project
from controlplane.accounts.requests import AuthenticatedHttpRequest
from controlplane.accounts.selectors import project_page_context
from controlplane.datasets.models import DatasetOperation, DatasetVersion, OperationKind
from controlplane.errors import NotFound, page_errors
from controlplane.evidence import gates, review, suite_results
from controlplane.evidence.models import SuiteRun, SuiteRunJob
from controlplane.registry import hooks, selectors
from controlplane.registry.models import Promotion, PromotionStatus, Target
from controlplane.training.models import Job

# How many steps of a dataset version's ancestry (dedup, split) the lineage follows.
ANCESTRY_DEPTH = 5
CHECK_KINDS = (OperationKind.DEDUP, OperationKind.CONTAMINATION, OperationKind.PII_SCAN)


# --- a registered model ------------------------------------------------------------------------------


@login_required
@page_errors
def model_detail(request: AuthenticatedHttpRequest, slug: str, name: str) -> HttpResponse:
    context = project_page_context(user=request.user, slug=slug)
    project: Project = context["project"]
    versions = list(selectors.model_version_list(project=project).filter(name=name).order_by("-version"))
    if not versions:
        raise NotFound("Not found.")
    deployed = {
        d.target: d
        for d in selectors.deployment_list(user=request.user, project=project).filter(model_name=name)
    }
    history = list(selectors.deployment_history(project=project, model_name=name))
    current = selectors.deployed_promotion_ids(project=project, model_name=name)
    targets = [
        {
            "value": value,
            "label": label,
            "champion": deployed.get(value),
            "history": [p for p in history if p.target == value],
            "rollback_choices": selectors.rollback_choices(project=project, model_name=name, target=value),
        }
        for value, label in Target.choices
    ]
    targets_of = {v.pk: [t for t, d in deployed.items() if d.model_version_id == v.pk] for v in versions}
    return render(
        request,
        "evidence/model.html",
        {
            **context,
            "name": name,
            "versions": [(v, targets_of[v.pk]) for v in versions],
            "targets": targets,
            "current_ids": current,
            "promotions": list(
                selectors.promotion_list(project=project)
                .filter(model_version__name=name)
                .order_by("-requested_at")[:50]
            ),
            "suite_results": suite_results.suite_results_by_version(project=project, model_name=name),
        },
    )


# --- a version and its lineage -----------------------------------------------------------------------


@dataclass
class DatasetNode:
    """One dataset version in the lineage, with what was checked on it."""

    version: DatasetVersion
    role: str  # "training", "few-shot examples", or how it was derived ("deduplicated from" ...)
    checks: list[DatasetOperation] = field(default_factory=list)
    # Contamination checks of other (evaluation) sets against this one, as training data.
    checked_against: list[DatasetOperation] = field(default_factory=list)


def _dataset_nodes(job: Job) -> list[DatasetNode]:
    nodes: list[DatasetNode] = []
    seen: set[int] = set()

    def add(version: DatasetVersion | None, role: str) -> None:
        if version is None or version.pk in seen:
            return
        seen.add(version.pk)
        nodes.append(DatasetNode(version=version, role=role))

    add(job.dataset_version, "training data")
    add(job.fewshot_dataset_version, "few-shot examples")
    # The training set's ancestry: what it was deduplicated or split from, with those checks too.
    parent, depth = job.dataset_version, 0
    while parent.parent_id is not None and depth < ANCESTRY_DEPTH:
        derived = parent.derivation.get("kind", "derived")
        parent = DatasetVersion.objects.select_related("dataset").get(pk=parent.parent_id)
        add(parent, f"{derived} source")
        depth += 1
    by_pk = {node.version.pk: node for node in nodes}
    operations = DatasetOperation.objects.filter(
        Q(source_version__in=list(by_pk)) | Q(options__train_version__in=list(by_pk)),
        kind__in=CHECK_KINDS,
    ).order_by("-created_at")[:100]
    for operation in operations:
        if operation.source_version_id in by_pk:
            by_pk[operation.source_version_id].checks.append(operation)
        train = (operation.options or {}).get("train_version")
        if (
            operation.kind == OperationKind.CONTAMINATION
            and train in by_pk
            and train != operation.source_version_id
        ):
            by_pk[train].checked_against.append(operation)
    return nodes


def _hyperparameters(job: Job) -> list[tuple[str, Any]]:
    """The few settings a reader compares versions by; the job's page has the whole spec."""
    config = job.config or {}
    method = config.get("method") or {}
    hyper = config.get("hyperparameters") or {}
    keys = [
        (f"{method.get('name', 'method')} {key}", method[key])
        for key in ("r", "alpha", "num_virtual_tokens")
        if key in method
    ]
    keys += [
        (key.replace("_", " "), hyper[key])
        for key in ("learning_rate", "epochs", "max_steps", "batch_size", "seed")
        if hyper.get(key) is not None
    ]
    return keys


@login_required
@page_errors
def model_version_detail(
    request: AuthenticatedHttpRequest, slug: str, name: str, version: int
) -> HttpResponse:
    context = project_page_context(user=request.user, slug=slug)
    project: Project = context["project"]
    model_version = selectors.model_version_by_number(project=project, name=name, version=version)
    job = model_version.job
    evaluations = list(job.evaluations.select_related("dataset_version__dataset").order_by("pk")[:20])
    suite_runs = list(
        SuiteRun.objects.filter(model_version=model_version)
        .select_related("suite")
        .order_by("-created_at")[:20]
    )
    task_jobs = SuiteRunJob.objects.filter(run__in=suite_runs).values_list("job_id", flat=True)
    # An evaluation that ran for a suite shows under its suite run, not twice.
    evaluations = [e for e in evaluations if e.pk not in set(task_jobs)]
    promotions = list(
        Promotion.objects.filter(model_version=model_version)
        .select_related("requested_by", "decided_by")
        .order_by("requested_at", "pk")
    )
    current = selectors.deployed_promotion_ids(project=project, model_name=name)
    return render(
        request,
        "evidence/model_version.html",
        {
            **context,
            "name": name,
            "version": model_version,
            "job": job,
            "datasets": _dataset_nodes(job),
            "hyperparameters": _hyperparameters(job),
            "evaluations": evaluations,
            "suite_runs": suite_runs,
            "deployments": [p for p in promotions if p.status == PromotionStatus.APPROVED],
            "current_ids": current,
            "promotions": promotions,
            "targets": Target.choices,
        },
    )


# --- a promotion request -----------------------------------------------------------------------------


@login_required
@page_errors
def promotion_detail(request: AuthenticatedHttpRequest, slug: str, promotion_id: int) -> HttpResponse:
    context = project_page_context(user=request.user, slug=slug)
    promotion = selectors.promotion_get(user=request.user, promotion_id=promotion_id)
    if promotion.model_version.project_id != context["project"].pk:
        raise NotFound("Not found.")
    gate_report = gates.gate_report(promotion=promotion)
    blockers = _blockers(promotion)
    deployed = selectors.deployment_list(user=request.user, project=context["project"]).filter(
        model_name=promotion.model_version.name, target=promotion.target
    )
    return render(
        request,
        "evidence/promotion.html",
        {
            **context,
            "p": promotion,
            "version": promotion.model_version,
            "champion": deployed.first(),
            "events": list(selectors.promotion_event_list(promotion=promotion)),
            "comments": list(selectors.promotion_comment_list(promotion=promotion)),
            "blockers": blockers,
            "suite_comparison": suite_results.suite_comparison(promotion=promotion),
            "gate_report": gate_report,
            "review": review.review_context(promotion=promotion, user=request.user),
            "card": getattr(promotion, "card", None),
            "is_requester": promotion.requested_by_id == request.user.pk,
        },
    )


def _blockers(promotion: Promotion) -> list[str]:
    """What would refuse an approval now; only an open request is asked about."""
    if promotion.status != PromotionStatus.REQUESTED:
        return []
    return hooks.approval_blockers(promotion)
