"""Governing the registry beyond a request and its decision: withdrawing one's own request, an
admin's audited override of a failing gate, rollbacks (governed, or an admin's emergency one),
comments, the deployment history, and one registration per job."""

from __future__ import annotations

import uuid

import pytest

from controlplane import tracking
from controlplane.accounts.models import Role
from controlplane.accounts.services import member_add
from controlplane.errors import Conflict, Forbidden, NotFound, ValidationFailed
from controlplane.registry import hooks, selectors, services
from controlplane.registry.models import (
    Deployment,
    ModelVersion,
    Promotion,
    PromotionComment,
    PromotionEvent,
    PromotionKind,
    PromotionStatus,
)
from controlplane.registry.services import model_version_create, promotion_request
from tests.controlplane.registry.trained import trained_job_make

pytestmark = pytest.mark.django_db

BLOCKER = "Exact match on suite core is 3.0 points below production (at most 1.0 allowed)."


@pytest.fixture
def ada(people):
    """The demo project's admin."""
    return member_add(project=people["demo"], username="ada", role=Role.ADMIN)


@pytest.fixture
def versions(people, mlflow_server, tmp_path):
    """Two versions of a model of its own (MLflow's registry outlives each test), each from a
    succeeded job whose adapter is in MLflow."""
    name = f"gov-{uuid.uuid4().hex[:8]}"
    return [
        model_version_create(
            job=trained_job_make(people["demo"], people["alice"], tmp_path), user=people["alice"], name=name
        )
        for _ in range(2)
    ]


@pytest.fixture
def failing_gate(monkeypatch):
    """A gate that holds something against every promotion, as the evidence app's gates would."""
    monkeypatch.setattr(hooks, "_approval_checks", [lambda promotion: [BLOCKER]])


def _deploy(version: ModelVersion, people, target: str = "production") -> Promotion:
    promotion = promotion_request(model_version=version, user=people["alice"], target=target)
    services.promotion_approve(promotion=promotion, user=people["carol"])
    promotion.refresh_from_db()
    return promotion


def _alias(version: ModelVersion, target: str = "production") -> int | None:
    return tracking.alias_get(name=version.mlflow_name, alias=target)


def _audit(promotion: Promotion) -> list[tuple[str, str, str]]:
    return list(
        PromotionEvent.objects.filter(promotion=promotion).values_list(
            "to_status", "actor__username", "comment"
        )
    )


# --- withdraw ---------------------------------------------------------------------------------------


def test_the_requester_withdraws_their_open_request_and_may_ask_again(people, versions):
    promotion = promotion_request(model_version=versions[0], user=people["carol"], target="production")

    services.promotion_withdraw(promotion=promotion, user=people["carol"], comment="asked too early")

    promotion.refresh_from_db()
    assert promotion.status == PromotionStatus.WITHDRAWN and promotion.decided_at is not None
    assert _audit(promotion)[-1] == ("withdrawn", "carol", "asked too early")
    # No longer open: the same version may be asked for again.
    again = promotion_request(model_version=versions[0], user=people["carol"], target="production")
    assert again.status == PromotionStatus.REQUESTED


def test_only_the_requester_can_withdraw_and_only_while_open(people, versions):
    promotion = promotion_request(model_version=versions[0], user=people["alice"], target="staging")
    for someone, error in (("bob", Forbidden), ("carol", Forbidden), ("charlie", NotFound)):
        with pytest.raises(error):
            services.promotion_withdraw(promotion=promotion, user=people[someone])
    assert Promotion.objects.get(pk=promotion.pk).status == PromotionStatus.REQUESTED

    services.promotion_reject(promotion=promotion, user=people["carol"])
    promotion.refresh_from_db()
    with pytest.raises(Conflict, match="already rejected"):
        services.promotion_withdraw(promotion=promotion, user=people["alice"])
    assert [row[0] for row in _audit(promotion)] == ["requested", "rejected"]


# --- override ---------------------------------------------------------------------------------------


def test_a_failing_gate_refuses_an_approval_and_changes_nothing(people, versions, failing_gate):
    promotion = promotion_request(model_version=versions[0], user=people["alice"], target="production")

    with pytest.raises(Conflict, match="3.0 points below") as refused:
        services.promotion_approve(promotion=promotion, user=people["carol"])

    assert refused.value.details == {"blockers": [BLOCKER]}
    assert Promotion.objects.get(pk=promotion.pk).status == PromotionStatus.REQUESTED
    assert [row[0] for row in _audit(promotion)] == ["requested"]  # not even claimed
    assert _alias(versions[0]) is None and not Deployment.objects.exists()


def test_an_approver_who_is_not_admin_cannot_override_even_with_a_reason(people, versions, failing_gate):
    promotion = promotion_request(model_version=versions[0], user=people["alice"], target="production")
    with pytest.raises(Forbidden, match="admin"):
        services.promotion_approve(promotion=promotion, user=people["carol"], override_reason="urgent fix")
    assert Promotion.objects.get(pk=promotion.pk).status == PromotionStatus.REQUESTED
    assert _alias(versions[0]) is None


def test_an_admin_overrides_a_failing_gate_only_with_a_written_reason_kept_in_the_audit(
    people, versions, failing_gate, ada
):
    promotion = promotion_request(model_version=versions[0], user=people["alice"], target="production")
    with pytest.raises(Conflict, match="override reason"):
        services.promotion_approve(promotion=promotion, user=ada, override_reason="   ")

    deployment = services.promotion_approve(
        promotion=promotion,
        user=ada,
        comment="ship it",
        override_reason="the suite's rows changed; judged by hand",
    )

    promotion.refresh_from_db()
    assert promotion.status == PromotionStatus.APPROVED
    assert promotion.override_reason == "the suite's rows changed; judged by hand"
    assert promotion.decision_comment == "ship it"
    assert _audit(promotion)[-1] == (
        "approved",
        "ada",
        "override: the suite's rows changed; judged by hand\nship it",
    )
    assert deployment.approved_by == ada and _alias(versions[0]) == versions[0].version


def test_an_admin_still_cannot_approve_their_own_request(people, versions, failing_gate, ada):
    promotion = promotion_request(model_version=versions[0], user=ada, target="production")
    with pytest.raises(Forbidden, match="your own"):
        services.promotion_approve(promotion=promotion, user=ada, override_reason="I know best")
    assert _alias(versions[0]) is None


def test_a_reason_given_where_nothing_blocks_is_not_kept_as_an_override(people, versions):
    promotion = promotion_request(model_version=versions[0], user=people["alice"], target="staging")
    services.promotion_approve(promotion=promotion, user=people["carol"], override_reason="just in case")
    promotion.refresh_from_db()
    assert promotion.override_reason == "" and "override" not in _audit(promotion)[-1][2]


# --- rollback ---------------------------------------------------------------------------------------


def test_a_rollback_is_a_governed_request_that_moves_the_alias_back_when_approved(people, versions, ada):
    first, second = versions
    _deploy(first, people)
    _deploy(second, people)
    assert _alias(first) == second.version

    rollback = services.rollback_request(
        model_version=first, user=people["carol"], target="production", comment="v2 answers worse"
    )
    assert rollback.kind == PromotionKind.ROLLBACK and rollback.status == PromotionStatus.REQUESTED
    assert _alias(first) == second.version  # nothing moves before the decision
    with pytest.raises(Forbidden, match="your own"):
        services.promotion_approve(promotion=rollback, user=people["carol"])

    services.promotion_approve(promotion=rollback, user=ada)

    assert _alias(first) == first.version
    assert Deployment.objects.get(model_name=first.name, target="production").model_version == first
    history = selectors.deployment_history(project=people["demo"], model_name=first.name, target="production")
    assert [(p.model_version.version, p.kind) for p in history] == [
        (first.version, "promote"),
        (second.version, "promote"),
        (first.version, "rollback"),
    ]
    assert selectors.deployed_promotion_ids(project=people["demo"], model_name=first.name) == {rollback.pk}


def test_a_rollback_goes_only_to_a_version_the_target_ran_before(people, versions):
    first, second = versions
    _deploy(first, people, target="staging")
    with pytest.raises(Conflict, match="never deployed to production"):
        services.rollback_request(model_version=first, user=people["alice"], target="production")
    with pytest.raises(Conflict, match="runs now"):
        services.rollback_request(model_version=first, user=people["alice"], target="staging")
    with pytest.raises(Conflict, match="never deployed to staging"):
        services.rollback_request(model_version=second, user=people["alice"], target="staging")
    with pytest.raises(ValidationFailed, match="Unknown target"):
        services.rollback_request(model_version=first, user=people["alice"], target="moon")
    with pytest.raises(Forbidden):
        services.rollback_request(model_version=first, user=people["viv"], target="staging")
    assert not Promotion.objects.filter(kind=PromotionKind.ROLLBACK).exists()
    assert selectors.rollback_choices(project=people["demo"], model_name=first.name, target="staging") == []


def test_an_admins_emergency_rollback_needs_no_second_approver_and_is_audited(
    people, versions, ada, monkeypatch
):
    first, second = versions
    _deploy(first, people)
    # The gate then fails what comes next, and what goes back too: an emergency passes it anyway.
    monkeypatch.setattr(hooks, "_approval_checks", [lambda promotion: [BLOCKER]])
    promotion = promotion_request(model_version=second, user=people["alice"], target="production")
    services.promotion_approve(promotion=promotion, user=ada, override_reason="hotfix")
    assert selectors.rollback_choices(project=people["demo"], model_name=first.name, target="production") == [
        first
    ]

    rollback, deployment = services.rollback_emergency(
        model_version=first, user=ada, target="production", reason="v2 leaks prompts"
    )

    assert deployment.model_version == first and deployment.approved_by == ada
    assert _alias(first) == first.version
    assert rollback.kind == PromotionKind.ROLLBACK and rollback.status == PromotionStatus.APPROVED
    assert rollback.requested_by == rollback.decided_by == ada
    assert rollback.override_reason == "v2 leaks prompts"
    assert _audit(rollback) == [
        ("requested", "ada", "emergency rollback: v2 leaks prompts"),
        ("approving", "ada", "emergency rollback: v2 leaks prompts"),
        ("approved", "ada", "emergency rollback: v2 leaks prompts"),
    ]


def test_an_emergency_rollback_needs_an_admin_and_a_reason(people, versions, ada):
    first, second = versions
    _deploy(first, people)
    _deploy(second, people)
    with pytest.raises(Forbidden, match="admin"):
        services.rollback_emergency(
            model_version=first, user=people["carol"], target="production", reason="x"
        )
    with pytest.raises(ValidationFailed, match="reason"):
        services.rollback_emergency(model_version=first, user=ada, target="production", reason="  ")
    with pytest.raises(Conflict, match="runs now"):
        services.rollback_emergency(model_version=second, user=ada, target="production", reason="x")
    assert _alias(first) == second.version
    assert not Promotion.objects.filter(kind=PromotionKind.ROLLBACK).exists()


# --- comments ---------------------------------------------------------------------------------------


def test_anyone_who_reads_the_project_comments_on_a_request_open_or_decided(people, versions):
    promotion = promotion_request(model_version=versions[0], user=people["alice"], target="staging")
    services.promotion_comment_add(promotion=promotion, user=people["viv"], body="  which suite?  ")
    services.promotion_reject(promotion=promotion, user=people["carol"])
    services.promotion_comment_add(promotion=promotion, user=people["alice"], body="core, v2")

    assert [(c.author.username, c.body) for c in selectors.promotion_comment_list(promotion=promotion)] == [
        ("viv", "which suite?"),
        ("alice", "core, v2"),
    ]
    with pytest.raises(NotFound):
        services.promotion_comment_add(promotion=promotion, user=people["charlie"], body="hello")
    for empty_or_long in ("   ", "x" * 5001):
        with pytest.raises(ValidationFailed):
            services.promotion_comment_add(promotion=promotion, user=people["bob"], body=empty_or_long)
    assert PromotionComment.objects.count() == 2


# --- registration -----------------------------------------------------------------------------------


def test_a_job_is_registered_once_and_another_name_is_refused_naming_the_version(people, versions):
    job, name = versions[0].job, versions[0].name
    assert model_version_create(job=job, user=people["bob"], name=name) == versions[0]
    with pytest.raises(Conflict, match=rf"registered already, as {name} v{versions[0].version}"):
        model_version_create(job=job, user=people["alice"], name="renamed")
    assert ModelVersion.objects.filter(job=job).count() == 1
    assert not ModelVersion.objects.filter(name="renamed").exists()
