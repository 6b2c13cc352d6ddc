"""Gates: policies, each rule's pass / fail / pending from committed data, blockers, the kept check."""

from __future__ import annotations

import pytest
from django.utils import timezone

from controlplane.datasets.models import DatasetOperation, DatasetVersion, OperationKind, OperationStatus
from controlplane.errors import Conflict, Forbidden, ValidationFailed
from controlplane.evidence import gates, suites
from controlplane.evidence.models import GateCheck, GatePolicyChange, PiiAcknowledgement, SuiteRun
from controlplane.registry import hooks
from controlplane.registry.services import promotion_reject
from tests.controlplane.evidence.test_suites import deploy, job_end, run_succeed, suite_make, version_make
from tests.factories import promotion_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def setting(people):
    """A champion in production, a challenger asking for it, a suite of two tasks on the model."""
    demo, alice = people["demo"], people["alice"]
    champion, challenger = version_make(demo, alice), version_make(demo, alice)
    suite = suite_make(people, champion)
    deploy(champion, people["carol"])
    return {"champion": champion, "challenger": challenger, "suite": suite, **people}


def policy(setting, *rules: dict) -> None:
    gates.gate_policy_set(
        project=setting["demo"],
        user=setting["carol"],
        model_name=setting["challenger"].name,
        target="production",
        rules=list(rules),
    )


def ran(setting, version, metrics: dict[str, dict[str, float]]) -> SuiteRun:
    run, _ = suites.suite_run_request(suite=setting["suite"], model_version=version, user=setting["alice"])
    run_succeed(run, metrics)
    return run


def statuses(promotion) -> list[str]:
    return [rule["status"] for rule in gates.gate_report(promotion=promotion)["rules"]]


ABSOLUTE = {
    "kind": "absolute",
    "suite": "core",
    "task": "quiz-0",
    "metric": "mc_acc",
    "op": ">=",
    "value": 0.5,
}
RELATIVE = {"kind": "relative", "suite": "core", "task": "quiz-0", "metric": "mc_acc", "max_drop": 1}


def test_no_policy_no_report_and_no_blockers(setting):
    promotion = promotion_make(setting["challenger"], setting["alice"])
    assert gates.gate_report(promotion=promotion) is None
    assert gates.approval_blockers(promotion) == []


def test_an_absolute_rule_is_pending_while_the_suite_runs_then_passes_or_fails(setting):
    policy(setting, ABSOLUTE, {**ABSOLUTE, "task": "quiz-1"})
    promotion = promotion_make(setting["challenger"], setting["alice"])
    assert statuses(promotion) == ["pending", "pending"]
    run, _ = suites.suite_run_request(
        suite=setting["suite"], model_version=setting["challenger"], user=setting["alice"]
    )
    assert statuses(promotion) == ["pending", "pending"]
    run_succeed(run, {"quiz-0": {"mc_acc": 0.75}, "quiz-1": {"mc_acc": 0.25}})
    report = gates.gate_report(promotion=promotion)
    assert [r["status"] for r in report["rules"]] == ["pass", "fail"]
    assert report["rules"][1]["figures"]["challenger"] == 0.25
    assert report["rules"][1]["figures"]["runs"]["challenger"] == {
        "id": run.pk,
        "status": "succeeded",
        "digest": run.digest,
    }
    assert not report["passed"] and not report["kept"]


def test_a_relative_rule_compares_with_the_champion_in_points(setting):
    policy(setting, RELATIVE, {**RELATIVE, "task": "quiz-1"}, {**RELATIVE, "max_drop": None, "min_gain": 5})
    promotion = promotion_make(setting["challenger"], setting["alice"])
    ran(setting, setting["challenger"], {"quiz-0": {"mc_acc": 0.795}, "quiz-1": {"mc_acc": 0.70}})
    assert statuses(promotion) == ["pending"] * 3, "the champion's run has not run yet"
    ran(setting, setting["champion"], {"quiz-0": {"mc_acc": 0.80}, "quiz-1": {"mc_acc": 0.75}})
    report = gates.gate_report(promotion=promotion)
    # 0.5 points below passes a 1-point drop; 5 points below fails it; no 5-point gain.
    assert [r["status"] for r in report["rules"]] == ["pass", "fail", "fail"]
    assert report["rules"][1]["figures"]["gain"] == pytest.approx(-5)


def test_a_relative_rule_in_fractions_and_a_metric_where_lower_is_better(setting):
    rule = {**RELATIVE, "metric": "perplexity", "max_drop": 0.1, "unit": "fraction"}
    policy(setting, rule, {**rule, "task": "quiz-1"})
    promotion = promotion_make(setting["challenger"], setting["alice"])
    ran(setting, setting["challenger"], {"quiz-0": {"perplexity": 10.5}, "quiz-1": {"perplexity": 12.0}})
    ran(setting, setting["champion"], {"quiz-0": {"perplexity": 10.0}, "quiz-1": {"perplexity": 10.0}})
    # 5% higher perplexity is within 10% worse; 20% is not.
    assert statuses(promotion) == ["pass", "fail"]


def test_a_relative_rule_passes_when_there_is_no_champion_yet(people):
    demo, alice = people["demo"], people["alice"]
    first = version_make(demo, alice)
    setting = {"demo": demo, "carol": people["carol"], "alice": alice, "challenger": first}
    setting["suite"] = suite_make(people, first)
    policy(setting, RELATIVE)
    promotion = promotion_make(first, alice)
    [result] = gates.gate_report(promotion=promotion)["rules"]
    assert result["status"] == "pass" and "no champion" in result["detail"]


def test_a_failed_suite_run_fails_its_rules(setting):
    policy(setting, ABSOLUTE)
    promotion = promotion_make(setting["challenger"], setting["alice"])
    run, _ = suites.suite_run_request(
        suite=setting["suite"], model_version=setting["challenger"], user=setting["alice"]
    )
    job_end(run.task_jobs.first().job, fail="boom")
    [result] = gates.gate_report(promotion=promotion)["rules"]
    assert result["status"] == "fail" and "failed" in result["detail"]


def test_a_judge_rule_is_pending_until_the_judge_has_a_verdict(setting):
    policy(setting, ABSOLUTE)  # the suite exists; a judge rule needs a judge task
    with pytest.raises(ValidationFailed, match="needs a judge task"):
        policy(setting, {"kind": "judge_win_rate", "suite": "core", "task": "quiz-0", "min": 0.5})


def _contamination(eval_version, train_version, rows: int | None, user) -> DatasetOperation:
    finished = rows is not None
    return DatasetOperation.objects.create(
        project=eval_version.dataset.project,
        kind=OperationKind.CONTAMINATION,
        name="x",
        source_version=eval_version,
        options={"train_version": train_version.pk, "n": 8},
        status=OperationStatus.SUCCEEDED if finished else OperationStatus.RUNNING,
        result={"contaminated_rows": rows, "train_version": train_version.pk} if finished else None,
        created_by=user,
        finished_at=timezone.now() if finished else None,
    )


def test_no_contamination_is_pending_until_each_task_is_checked_then_passes_or_fails(setting):
    policy(setting, {"kind": "no_contamination"})
    challenger, alice = setting["challenger"], setting["alice"]
    promotion = promotion_make(challenger, alice)
    train = challenger.job.dataset_version
    evals = [suites.suite_tasks(setting["suite"]).evaluations()[i].dataset_version for i in (0, 1)]
    first, second = (DatasetVersion.objects.select_related("dataset").get(pk=pk) for pk in evals)
    assert statuses(promotion) == ["pending"]
    _contamination(first, train, 0, alice)
    _contamination(second, train, None, alice)
    assert statuses(promotion) == ["pending"]
    _contamination(second, train, 0, alice)
    assert statuses(promotion) == ["pass"]
    _contamination(second, train, 3, alice)
    [result] = gates.gate_report(promotion=promotion)["rules"]
    assert result["status"] == "fail" and "3 rows" in result["detail"]


def test_a_request_starts_the_missing_dataset_checks(
    setting, django_capture_on_commit_callbacks, monkeypatch
):
    started = []
    monkeypatch.setattr(gates, "dataset_operation_start", lambda **kw: started.append(kw["options"].kind))
    policy(setting, {"kind": "no_contamination"}, {"kind": "pii_clean"})
    with django_capture_on_commit_callbacks(execute=True):
        promotion_make(setting["challenger"], setting["alice"])
    assert sorted(started) == ["contamination", "contamination", "pii_scan"]


def _pii_scan(version, rows: int, user) -> DatasetOperation:
    return DatasetOperation.objects.create(
        project=version.dataset.project,
        kind=OperationKind.PII_SCAN,
        name="x",
        source_version=version,
        status=OperationStatus.SUCCEEDED,
        result={
            "kind": "pii_scan",
            "rows": 3,
            "kinds": {"email": {"rows": rows, "matches": rows, "examples": []}},
        },
        created_by=user,
        finished_at=timezone.now(),
    )


def test_pii_clean_passes_on_a_clean_scan_and_an_approvers_acknowledgement(setting):
    policy(setting, {"kind": "pii_clean"})
    challenger, alice, carol = setting["challenger"], setting["alice"], setting["carol"]
    promotion = promotion_make(challenger, alice)
    assert statuses(promotion) == ["pending"]
    scan = _pii_scan(challenger.job.dataset_version, 0, alice)
    assert statuses(promotion) == ["pass"]
    with pytest.raises(Conflict, match="nothing to acknowledge"):
        gates.pii_acknowledge(promotion=promotion, user=carol, reason="fine")
    scan.delete()
    _pii_scan(challenger.job.dataset_version, 2, alice)
    [result] = gates.gate_report(promotion=promotion)["rules"]
    assert result["status"] == "fail" and "2 rows" in result["detail"]
    with pytest.raises(Forbidden):
        gates.pii_acknowledge(promotion=promotion, user=alice, reason="fine")
    with pytest.raises(ValidationFailed, match="reason"):
        gates.pii_acknowledge(promotion=promotion, user=carol, reason="  ")
    gates.pii_acknowledge(promotion=promotion, user=carol, reason="synthetic addresses")
    [result] = gates.gate_report(promotion=promotion)["rules"]
    assert result["status"] == "pass" and "acknowledged by carol: synthetic addresses" in result["detail"]
    assert PiiAcknowledgement.objects.count() == 1


def test_approval_blockers_say_each_failing_or_pending_rule(setting):
    policy(setting, ABSOLUTE, RELATIVE)
    promotion = promotion_make(setting["challenger"], setting["alice"])
    ran(setting, setting["challenger"], {"quiz-0": {"mc_acc": 0.25}})
    blockers = hooks.approval_blockers(promotion)
    assert len(blockers) == 2
    assert blockers[0].startswith("Gate rule mc_acc on core/quiz-0 >= 0.5: fail (mc_acc is 0.2500)")
    assert "pending" in blockers[1] and "champion" in blockers[1]


def test_a_decision_keeps_the_gate_check_and_the_report_is_the_kept_one(setting):
    policy(setting, ABSOLUTE)
    promotion = promotion_make(setting["challenger"], setting["alice"])
    run = ran(setting, setting["challenger"], {"quiz-0": {"mc_acc": 0.25}})
    seen = gates.gate_report(promotion=promotion)
    promotion_reject(promotion=promotion, user=setting["carol"], comment="worse")
    check = GateCheck.objects.get(promotion=promotion)
    assert not check.passed and check.digest == seen["digest"]
    assert check.results == seen["rules"]
    # Whatever changes afterwards, the report is what was decided on.
    policy(setting, {**ABSOLUTE, "value": 0.1})
    SuiteRun.objects.filter(pk=run.pk).update(results={"quiz-0": {"mc_acc": 0.9}})
    kept = gates.gate_report(promotion=promotion)
    assert kept["kept"] and kept["rules"] == seen["rules"] and kept["digest"] == check.digest
    assert not kept["passed"]


def test_a_policy_is_set_by_an_approver_audited_and_checked(setting):
    policy(setting, ABSOLUTE)
    policy(setting, ABSOLUTE, {"kind": "pii_clean"})
    assert [len(c.rules) for c in GatePolicyChange.objects.order_by("pk")] == [1, 2]
    assert {c.actor.username for c in GatePolicyChange.objects.all()} == {"carol"}
    args = {"project": setting["demo"], "model_name": "tiny-lora", "target": "production", "rules": []}
    with pytest.raises(Forbidden):
        gates.gate_policy_set(user=setting["alice"], **args)
    for rules, message in [
        ([{"kind": "absolute"}], "rules.0"),
        ([{"kind": "nope"}], "rules.0"),
        ([{**RELATIVE, "min_gain": 1}], "exactly one"),
        ([{**ABSOLUTE, "suite": "missing"}], "no suite 'missing'"),
        ([{**ABSOLUTE, "task": "missing"}], "no task 'missing'"),
        ([{**ABSOLUTE, "op": "=="}], "rules.0"),
        ("x", "rules"),
    ]:
        with pytest.raises(ValidationFailed, match=message):
            gates.gate_policy_set(user=setting["carol"], **{**args, "rules": rules})
    with pytest.raises(ValidationFailed, match="Unknown target"):
        gates.gate_policy_set(user=setting["carol"], **{**args, "target": "moon"})
    assert GatePolicyChange.objects.count() == 2
