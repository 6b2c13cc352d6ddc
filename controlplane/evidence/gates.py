"""Gate policies and their verdict on a promotion: absolute, champion-relative and governance rules.

A policy per (registered model, target) lists rules (``GateRules``). ``gate_report`` computes every
rule from committed rows (suite runs, dataset checks) as pass / fail / pending with its figures; a
suite still running is pending and blocks. When a promotion is decided the report is kept as its
``GateCheck``, and from then on that kept verdict is what the report returns.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from django.db import transaction
from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field, RootModel, StringConstraints, model_validator

from controlplane.accounts.models import Project, Role, User
from controlplane.accounts.selectors import project_role_check
from controlplane.datasets.inputs import ContaminationRequest, PiiScanRequest
from controlplane.datasets.models import DatasetOperation, DatasetVersion, OperationKind, OperationStatus
from controlplane.datasets.services import dataset_operation_start
from controlplane.errors import Conflict, DomainError, NotFound, ValidationFailed, pydantic_parse
from controlplane.evidence import suite_results, suites
from controlplane.evidence.digests import digest_of, json_safe
from controlplane.evidence.models import (
    GateCheck,
    GatePolicy,
    GatePolicyChange,
    PiiAcknowledgement,
    SuiteRun,
    SuiteRunStatus,
)
from controlplane.registry.models import ModelVersion, Promotion, PromotionStatus, Target

log = logging.getLogger(__name__)

Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,99}$")]
Metric = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:/-]{1,100}$")]


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AbsoluteRule(_Rule):
    """The challenger's ``metric`` on a suite task must be ``op`` ``value`` (e.g. mc_acc >= 0.5)."""

    kind: Literal["absolute"]
    suite: Name
    task: Name
    metric: Metric
    op: Literal[">=", "<="]
    value: float = Field(allow_inf_nan=False)

    def describe(self) -> str:
        return f"{self.metric} on {self.suite}/{self.task} {self.op} {self.value:g}"


class RelativeRule(_Rule):
    """The challenger against the target's champion on the same suite task.

    ``max_drop``: worse than the champion by at most this much; ``min_gain``: better by at least
    this much. ``unit`` "points" counts hundredths of the metric (0.01 of an accuracy is 1 point);
    "fraction" counts the change relative to the champion's value (0.05 is 5%). "Worse" follows
    the metric: lower perplexity and loss are better, higher everything else.
    """

    kind: Literal["relative"]
    suite: Name
    task: Name
    metric: Metric
    max_drop: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    min_gain: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    unit: Literal["points", "fraction"] = "points"

    @model_validator(mode="after")
    def _one_bound(self) -> RelativeRule:
        if (self.max_drop is None) == (self.min_gain is None):
            raise ValueError("give exactly one of 'max_drop' or 'min_gain'")
        return self

    def describe(self) -> str:
        unit = " points" if self.unit == "points" else " (fraction)"
        where = f"{self.metric} on {self.suite}/{self.task}"
        if self.max_drop is not None:
            return f"{where} at most {self.max_drop:g}{unit} below the champion"
        return f"{where} at least {self.min_gain:g}{unit} above the champion"


class JudgeWinRateRule(_Rule):
    """The judge's win rate of the challenger over the champion on a judge task, at least ``min``."""

    kind: Literal["judge_win_rate"]
    suite: Name
    task: Name
    min: float = Field(ge=0, le=1)

    def describe(self) -> str:
        return f"judge win rate on {self.suite}/{self.task} >= {self.min:.0%}"


class NoContaminationRule(_Rule):
    """No row of a suite task's dataset version appears in the challenger's training data (a
    finished contamination check of each pair with no matches)."""

    kind: Literal["no_contamination"]
    suite: Name | None = None  # None: every current suite of the model

    def describe(self) -> str:
        return f"no contamination of {self.suite or 'any suite'}'s rows in the training data"


class PiiCleanRule(_Rule):
    """A finished PII scan of the challenger's training data found nothing, or an approver
    acknowledged what it found."""

    kind: Literal["pii_clean"]

    def describe(self) -> str:
        return "training data PII scan clean or acknowledged"


Rule = Annotated[
    AbsoluteRule | RelativeRule | JudgeWinRateRule | NoContaminationRule | PiiCleanRule,
    Field(discriminator="kind"),
]


class GateRules(RootModel[list[Rule]]):
    root: list[Rule] = Field(max_length=50)


# --- policies ---------------------------------------------------------------------------------------


def gate_policy_get(*, project: Project, model_name: str, target: str) -> GatePolicy | None:
    if target not in Target.values:
        raise ValidationFailed(f"Unknown target {target!r}; choose one of {', '.join(Target.values)}.")
    return GatePolicy.objects.filter(project=project, model_name=model_name, target=target).first()


def _rules_fit(project: Project, model_name: str, rules: GateRules) -> None:
    """Each rule names a suite of the model and a task its current version has."""
    current = {s.name: s for s in suites.suites_current(project=project, model_name=model_name)}
    for index, rule in enumerate(rules.root):
        name = getattr(rule, "suite", None)
        if name is None:
            continue
        suite = current.get(name)
        if suite is None:
            raise ValidationFailed(f"Rule {index + 1}: {model_name} has no suite {name!r}.")
        task = getattr(rule, "task", None)
        if task is None:
            continue
        tasks = {t.name: t for t in suites.suite_tasks(suite).root}
        if task not in tasks:
            raise ValidationFailed(f"Rule {index + 1}: suite {name} v{suite.version} has no task {task!r}.")
        judged = isinstance(tasks[task], suites.JudgeTask)
        if isinstance(rule, JudgeWinRateRule) != judged:
            raise ValidationFailed(
                f"Rule {index + 1}: task {task!r} is {'a judge' if judged else 'an evaluation'} task; "
                + ("use judge_win_rate for it." if judged else "judge_win_rate needs a judge task.")
            )


def gate_policy_set(*, project: Project, user: User, model_name: str, target: str, rules: Any) -> GatePolicy:
    """Set the rules of the model's gate to ``target`` (an approver's or an admin's call), audited."""
    project_role_check(user=user, project=project, role=Role.APPROVER)
    if target not in Target.values:
        raise ValidationFailed(f"Unknown target {target!r}; choose one of {', '.join(Target.values)}.")
    if not ModelVersion.objects.filter(project=project, name=model_name).exists():
        raise NotFound(f"No registered model {model_name!r} in {project.slug}.")
    parsed = pydantic_parse(GateRules, rules, field="rules")
    _rules_fit(project, model_name, parsed)
    stored = parsed.model_dump(mode="json")
    with transaction.atomic():
        policy, _ = GatePolicy.objects.select_for_update().update_or_create(
            project=project,
            model_name=model_name,
            target=target,
            defaults={"rules": stored, "updated_by": user},
        )
        GatePolicyChange.objects.create(policy=policy, rules=stored, actor=user)
    return policy


# --- the report ---------------------------------------------------------------------------------------


PASS, FAIL, PENDING = "pass", "fail", "pending"


def _result(rule: Any, status: str, detail: str, **figures: Any) -> dict[str, Any]:
    """One rule's outcome: ``rule`` says it in words, ``spec`` as written, ``figures`` what it read."""
    return {
        "kind": rule.kind,
        "rule": rule.describe(),
        "spec": rule.model_dump(mode="json"),
        "status": status,
        "detail": detail,
        "figures": figures,
    }


class _Evidence:
    """What the rules read, loaded once per report from committed rows."""

    def __init__(self, promotion: Promotion) -> None:
        self.promotion = promotion
        self.challenger = promotion.model_version
        self.champion = suite_results.promotion_champion(promotion)
        self.runs = {
            suite.name: (suite, mine, theirs)
            for suite, mine, theirs in suite_results.promotion_runs(promotion)
        }
        self.training = DatasetVersion.objects.select_related("dataset").get(
            pk=self.challenger.job.dataset_version_id
        )

    def metric(
        self, rule: Any, run: SuiteRun | None, side: str, metric: str = ""
    ) -> tuple[str, float | None, str]:
        """(state, value, sentence) of ``metric`` (the rule's own by default) on ``rule.task`` in
        ``side``'s run."""
        metric = metric or rule.metric
        if run is None:
            return PENDING, None, f"the {side}'s run of suite {rule.suite} has not started"
        if run.status == SuiteRunStatus.RUNNING:
            return PENDING, None, f"the {side}'s run of suite {rule.suite} is still running"
        if run.status == SuiteRunStatus.FAILED:
            return FAIL, None, f"the {side}'s run of suite {rule.suite} failed ({run.error[:200]})"
        value = (run.results.get(rule.task) or {}).get(metric)
        if not isinstance(value, int | float):
            return FAIL, None, f"the {side}'s run reported no {metric} on task {rule.task}"
        return PASS, float(value), ""


def _absolute(rule: AbsoluteRule, evidence: _Evidence) -> dict[str, Any]:
    found = evidence.runs.get(rule.suite)
    if found is None:
        return _result(rule, FAIL, f"the model has no suite {rule.suite}")
    state, value, why = evidence.metric(rule, found[1], "challenger")
    if value is None:
        return _result(rule, state, why)
    ok = value >= rule.value if rule.op == ">=" else value <= rule.value
    return _result(
        rule, PASS if ok else FAIL, f"{rule.metric} is {value:.4f}", challenger=value, threshold=rule.value
    )


def _relative(rule: RelativeRule, evidence: _Evidence) -> dict[str, Any]:
    found = evidence.runs.get(rule.suite)
    if found is None:
        return _result(rule, FAIL, f"the model has no suite {rule.suite}")
    if evidence.champion is None and found[2] is None:
        # The first version to reach the target has nothing to be compared with.
        return _result(rule, PASS, f"no champion on {evidence.promotion.target} to compare with")
    state, mine, why = evidence.metric(rule, found[1], "challenger")
    if mine is None:
        return _result(rule, state, why)
    state, theirs, why = evidence.metric(rule, found[2], "champion")
    if theirs is None:
        return _result(rule, state, why)
    # The gain in the metric's better direction, in the rule's unit.
    gain = (theirs - mine) if suite_results.lower_is_better(rule.metric) else (mine - theirs)
    if rule.unit == "points":
        gain *= 100
    elif theirs:
        gain /= abs(theirs)
    else:
        return _result(rule, FAIL, "the champion's value is 0: a fraction of it is undefined; use points")
    ok = gain >= -rule.max_drop if rule.max_drop is not None else gain >= (rule.min_gain or 0.0)
    unit = "points" if rule.unit == "points" else "of the champion's value"
    detail = f"{mine:.4f} vs the champion's {theirs:.4f}: {gain:+.4g} {unit}"
    return _result(rule, PASS if ok else FAIL, detail, challenger=mine, champion=theirs, gain=gain)


def _judge(rule: JudgeWinRateRule, evidence: _Evidence) -> dict[str, Any]:
    found = evidence.runs.get(rule.suite)
    if found is None:
        return _result(rule, FAIL, f"the model has no suite {rule.suite}")
    if evidence.champion is None:
        return _result(rule, PASS, f"no champion on {evidence.promotion.target} to compare with")
    verdict = suite_results.judge_side(found[1], rule.task)
    job = verdict["job"]
    if verdict["state"] == "failed":
        return _result(rule, FAIL, f"judge job {job.pk} failed: {verdict.get('error', '')[:200]}", job=job.pk)
    value = verdict["metrics"].get("judge_win_rate")
    if verdict["state"] != "succeeded":
        return _result(rule, PENDING, f"judge task {rule.task} has no verdict yet ({verdict['state']})")
    if not isinstance(value, int | float):
        return _result(rule, FAIL, f"judge job {job.pk} reported no judge_win_rate", job=job.pk)
    ok = value >= rule.min
    detail = f"the judge preferred this version in {value:.1%} of pairs (ties count half)"
    return _result(rule, PASS if ok else FAIL, detail, win_rate=value, threshold=rule.min, job=job.pk)


def _task_datasets(evidence: _Evidence, suite_name: str | None) -> list[tuple[str, int]]:
    """(suite/task, dataset version id) of every evaluation task the rule covers."""
    pairs = []
    for name, (suite, _, _) in evidence.runs.items():
        if suite_name is not None and name != suite_name:
            continue
        for task in suites.suite_tasks(suite).evaluations():
            pairs.append((f"{name}/{task.name}", task.dataset_version))
    return pairs


def _contamination_of(eval_version_id: int, train_version_id: int) -> DatasetOperation | None:
    """The latest contamination check of an eval version against a training version."""
    return (
        DatasetOperation.objects.filter(
            kind=OperationKind.CONTAMINATION,
            source_version_id=eval_version_id,
            options__train_version=train_version_id,
        )
        .order_by("-created_at", "-pk")
        .first()
    )


def _no_contamination(rule: NoContaminationRule, evidence: _Evidence) -> dict[str, Any]:
    if rule.suite is not None and rule.suite not in evidence.runs:
        return _result(rule, FAIL, f"the model has no suite {rule.suite}")
    train = evidence.training
    pairs = _task_datasets(evidence, rule.suite)
    if not pairs:
        return _result(rule, PASS, "no evaluation task to check")
    failing, pending, checked = [], [], {}
    for where, version_id in pairs:
        if version_id == train.pk:
            failing.append(f"{where} evaluates on the training data itself")
            continue
        operation = _contamination_of(version_id, train.pk)
        if operation is None or not operation.is_finished:
            pending.append(f"{where}: {'not checked yet' if operation is None else 'check running'}")
            continue
        if operation.status == OperationStatus.FAILED:
            failing.append(f"{where}: the check failed ({operation.message[:100]})")
            continue
        rows = int((operation.result or {}).get("contaminated_rows", 0))
        checked[where] = rows
        if rows:
            failing.append(f"{where}: {rows} rows found in {train}")
    if failing:
        return _result(rule, FAIL, "; ".join(failing), contaminated_rows=checked)
    if pending:
        return _result(rule, PENDING, "; ".join(pending), contaminated_rows=checked)
    return _result(rule, PASS, f"no rows of {len(pairs)} task(s) found in {train}", contaminated_rows=checked)


def _pii_scan_of(version: DatasetVersion) -> DatasetOperation | None:
    return (
        DatasetOperation.objects.filter(kind=OperationKind.PII_SCAN, source_version=version)
        .select_related("pii_acknowledgement__acknowledged_by")
        .order_by("-created_at", "-pk")
        .first()
    )


def pii_findings(operation: DatasetOperation) -> int:
    kinds = (operation.result or {}).get("kinds") or {}
    return sum(int((found or {}).get("rows", 0)) for found in kinds.values() if isinstance(found, dict))


def _pii_clean(rule: PiiCleanRule, evidence: _Evidence) -> dict[str, Any]:
    train = evidence.training
    operation = _pii_scan_of(train)
    if operation is None:
        return _result(rule, PENDING, f"{train} has not been scanned for PII yet")
    if not operation.is_finished:
        return _result(rule, PENDING, f"the PII scan of {train} is running", operation=operation.pk)
    if operation.status == OperationStatus.FAILED:
        return _result(rule, FAIL, f"the PII scan of {train} failed: start another", operation=operation.pk)
    rows = pii_findings(operation)
    if not rows:
        return _result(rule, PASS, f"the PII scan of {train} found nothing", operation=operation.pk, rows=0)
    ack = getattr(operation, "pii_acknowledgement", None)
    if ack is not None:
        return _result(
            rule,
            PASS,
            f"{rows} rows with PII in {train}, acknowledged by {ack.acknowledged_by}: {ack.reason}",
            operation=operation.pk,
            rows=rows,
            acknowledged_by=ack.acknowledged_by.username,
        )
    return _result(
        rule,
        FAIL,
        f"the PII scan of {train} found {rows} rows with personal data, not acknowledged",
        operation=operation.pk,
        rows=rows,
    )


_CHECKS = {
    "absolute": _absolute,
    "relative": _relative,
    "judge_win_rate": _judge,
    "no_contamination": _no_contamination,
    "pii_clean": _pii_clean,
}


def _policy_of(promotion: Promotion) -> GatePolicy | None:
    version = promotion.model_version
    return GatePolicy.objects.filter(
        project_id=version.project_id, model_name=version.name, target=promotion.target
    ).first()


def _report_compute(promotion: Promotion) -> dict[str, Any] | None:
    """The rules' results now, or None when no policy applies to the promotion's model and target."""
    policy = _policy_of(promotion)
    if policy is None:
        return None
    evidence = _Evidence(promotion)
    rules = GateRules.model_validate(policy.rules).root
    results = []
    for rule in rules:
        result = _CHECKS[rule.kind](rule, evidence)  # type: ignore[operator]
        found = evidence.runs.get(getattr(rule, "suite", None) or "")
        if found is not None:
            # The runs the rule read, by id and digest: what a decision cites.
            result["figures"]["runs"] = {
                side: {"id": run.pk, "status": run.status, "digest": run.digest} if run is not None else None
                for side, run in (("challenger", found[1]), ("champion", found[2]))
            }
        results.append(result)
    return {
        "policy": policy.pk,
        "target": promotion.target,
        "champion": evidence.champion.pk if evidence.champion is not None else None,
        "rules": results,
        "passed": all(r["status"] == PASS for r in results),
        "pending": any(r["status"] == PENDING for r in results),
    }


def gate_report(*, promotion: Promotion) -> dict[str, Any] | None:
    """Every rule of the promotion's gate with its figures and pass / fail / pending: the kept
    ``GateCheck`` once decided, computed from committed data before. None when no policy applies.
    Rendered by ``evidence/_gates.html`` as ``gate_report``."""
    check = GateCheck.objects.filter(promotion=promotion).first()
    if check is not None:
        rules = check.results if isinstance(check.results, list) else []
        return {
            "rules": rules,
            "passed": check.passed,
            "pending": any(r.get("status") == PENDING for r in rules if isinstance(r, dict)),
            "kept": True,
            "digest": check.digest,
            "checked_at": check.checked_at,
        }
    report = _report_compute(promotion)
    if report is None:
        return None
    return report | {
        "kept": False,
        "digest": digest_of(json_safe(report["rules"])),
        "checked_at": timezone.now(),
    }


def approval_blockers(promotion: Promotion) -> list[str]:
    """Why ``promotion`` may not be approved now: each failing or pending rule, one sentence each."""
    report = _report_compute(promotion)
    if report is None:
        return []
    return [
        f"Gate rule {r['rule']}: {r['status']} ({r['detail']})."
        for r in report["rules"]
        if r["status"] != PASS
    ]


def promotion_changed(promotion_id: int, status: PromotionStatus) -> None:
    """On a decision, keep the gate's verdict (``GateCheck``) in the decision's transaction; on a
    request, start the dataset checks its governance rules need (on commit)."""
    if status == PromotionStatus.REQUESTED:
        transaction.on_commit(lambda: promotion_checks_start(promotion_id))
        return
    if status not in (PromotionStatus.APPROVED, PromotionStatus.REJECTED):
        return
    promotion = Promotion.objects.select_related("model_version__job").get(pk=promotion_id)
    if GateCheck.objects.filter(promotion=promotion).exists():
        return
    report = _report_compute(promotion)
    if report is None:
        return
    # ``results`` is the list of rules, each with the suite runs (ids and digests) it read.
    GateCheck.objects.create(
        promotion=promotion,
        passed=report["passed"],
        results=json_safe(report["rules"]),
        digest=digest_of(json_safe(report["rules"])),
    )


def promotion_checks_start(promotion_id: int) -> list[DatasetOperation]:
    """Start the contamination checks and the PII scan the promotion's gate needs and lacks.

    Started by the requester (a member); one that cannot start is logged and stays pending on the
    gate, where it blocks approval until someone runs it.
    """
    promotion = Promotion.objects.select_related("model_version__job", "requested_by").get(pk=promotion_id)
    policy = _policy_of(promotion)
    if policy is None or promotion.status != PromotionStatus.REQUESTED:
        return []
    rules = GateRules.model_validate(policy.rules).root
    evidence = _Evidence(promotion)
    train = evidence.training
    started = []

    def start(version: DatasetVersion, options: ContaminationRequest | PiiScanRequest) -> None:
        try:
            started.append(
                dataset_operation_start(version=version, user=promotion.requested_by, options=options)
            )
        except DomainError as exc:
            log.warning(
                "a %s check of %s did not start for promotion %s: %s",
                options.kind,
                version,
                promotion_id,
                exc,
            )

    for rule in rules:
        if isinstance(rule, NoContaminationRule):
            for _, version_id in _task_datasets(evidence, rule.suite):
                if version_id != train.pk and _contamination_of(version_id, train.pk) is None:
                    version = DatasetVersion.objects.select_related("dataset__project").get(pk=version_id)
                    start(version, ContaminationRequest(kind="contamination", train_version=train.pk))
        elif isinstance(rule, PiiCleanRule) and _pii_scan_of(train) is None:
            start(train, PiiScanRequest(kind="pii_scan"))
    return started


def pii_acknowledge(*, promotion: Promotion, user: User, reason: str) -> PiiAcknowledgement:
    """An approver accepts what the latest PII scan of the challenger's training data found."""
    project = promotion.model_version.project
    project_role_check(user=user, project=project, role=Role.APPROVER)
    reason = reason.strip()
    if not reason:
        raise ValidationFailed("Say why the findings are acceptable: 'reason' is required.")
    if len(reason) > 2000:
        raise ValidationFailed("reason: at most 2000 characters.")
    if not PromotionStatus(promotion.status).is_open:
        raise Conflict(f"This promotion is already {promotion.status}.")
    train = DatasetVersion.objects.get(pk=promotion.model_version.job.dataset_version_id)
    operation = _pii_scan_of(train)
    if operation is None or operation.status != OperationStatus.SUCCEEDED:
        raise Conflict(f"{train} has no finished PII scan to acknowledge.")
    if not pii_findings(operation):
        raise Conflict(f"The PII scan of {train} found nothing: there is nothing to acknowledge.")
    if getattr(operation, "pii_acknowledgement", None) is not None:
        raise Conflict(f"The PII scan of {train} is acknowledged already.")
    with transaction.atomic():
        return PiiAcknowledgement.objects.create(operation=operation, acknowledged_by=user, reason=reason)
