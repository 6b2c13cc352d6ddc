from __future__ import annotations

import pytest
from mlflow import MlflowClient

from controlplane import tracking
from controlplane.errors import Conflict, Forbidden, ValidationFailed
from controlplane.registry import services
from controlplane.registry.models import Deployment, Promotion, PromotionEvent, PromotionStatus
from controlplane.registry.services import model_version_create, promotion_request
from controlplane.training.models import JobStatus
from tests.controlplane.registry.trained import trained_job_make
from tests.factories import job_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def trained_job(people, mlflow_server, tmp_path):
    """A succeeded job whose adapter really is in MLflow."""
    return trained_job_make(people["demo"], people["alice"], tmp_path)


@pytest.fixture
def retrained_job(people, mlflow_server, tmp_path, trained_job):
    """Another succeeded job, trained after ``trained_job``: its result is the model's next version."""
    return trained_job_make(people["demo"], people["alice"], tmp_path)


def _alias(name: str, alias: str) -> int | None:
    return tracking.alias_get(name=name, alias=alias)


def test_approval_moves_the_alias_and_records_the_deployment(people, trained_job, mlflow_server):
    version = model_version_create(job=trained_job, user=people["alice"], name="tiny-lora")
    assert (
        MlflowClient(mlflow_server).get_model_version(version.mlflow_name, str(version.version)).run_id
        == trained_job.mlflow_run_id
    )
    promotion = promotion_request(model_version=version, user=people["alice"], target="production")

    deployment = services.promotion_approve(promotion=promotion, user=people["carol"], comment="looks good")

    assert _alias(version.mlflow_name, "production") == version.version
    assert (deployment.model_version, deployment.approved_by) == (version, people["carol"])
    promotion.refresh_from_db()
    assert promotion.status == PromotionStatus.APPROVED and promotion.decided_by == people["carol"]
    assert list(
        PromotionEvent.objects.filter(promotion=promotion).values_list("to_status", "actor__username")
    ) == [
        ("requested", "alice"),
        ("approving", "carol"),
        ("approved", "carol"),
    ]
    with pytest.raises(Conflict):
        services.promotion_approve(promotion=promotion, user=people["carol"])


def test_the_requester_cannot_approve_their_own_request(people, trained_job):
    version = model_version_create(job=trained_job, user=people["carol"], name="self-approved")
    promotion = promotion_request(model_version=version, user=people["carol"], target="production")
    with pytest.raises(Forbidden, match="your own"):
        services.promotion_approve(promotion=promotion, user=people["carol"])
    assert _alias(version.mlflow_name, "production") is None
    assert not Deployment.objects.exists()


def test_a_member_cannot_approve(people, trained_job):
    version = model_version_create(job=trained_job, user=people["alice"], name="m2")
    promotion = promotion_request(model_version=version, user=people["alice"], target="staging")
    with pytest.raises(Forbidden, match="approver"):
        services.promotion_approve(promotion=promotion, user=people["bob"])
    assert Promotion.objects.get().status == PromotionStatus.REQUESTED


def test_a_rejected_request_cannot_then_be_approved(people, trained_job):
    version = model_version_create(job=trained_job, user=people["alice"], name="m3")
    promotion = promotion_request(model_version=version, user=people["alice"], target="production")
    services.promotion_reject(promotion=promotion, user=people["carol"], comment="not yet")
    promotion.refresh_from_db()
    with pytest.raises(Conflict):
        services.promotion_approve(promotion=promotion, user=people["carol"])
    assert _alias(version.mlflow_name, "production") is None


def test_of_two_approvals_racing_only_one_touches_mlflow(people, trained_job, monkeypatch):
    from controlplane.accounts.models import Role
    from controlplane.accounts.services import member_add

    dana = member_add(project=people["demo"], username="dana", role=Role.APPROVER)
    version = model_version_create(job=trained_job, user=people["alice"], name="m4")
    promotion = promotion_request(model_version=version, user=people["alice"], target="production")
    real_alias_set = tracking.alias_set
    rival: list[Exception] = []

    def alias_set_while_a_rival_approves(**kwargs):
        # The second approval arrives while the first one is talking to MLflow.
        if not rival:
            try:
                services.promotion_approve(promotion=Promotion.objects.get(pk=promotion.pk), user=dana)
            except Conflict as exc:
                rival.append(exc)
        return real_alias_set(**kwargs)

    monkeypatch.setattr(tracking, "alias_set", alias_set_while_a_rival_approves)
    deployment = services.promotion_approve(promotion=promotion, user=people["carol"])
    assert "already approving" in str(rival[0])  # refused before it could call MLflow
    assert deployment.approved_by == people["carol"]
    monkeypatch.undo()
    assert _alias(version.mlflow_name, "production") == version.version


def test_an_approval_whose_database_step_fails_reopens_the_request_and_restores_the_alias(
    people, trained_job, retrained_job, monkeypatch
):
    from django.db import DatabaseError

    first = model_version_create(job=trained_job, user=people["alice"], name="m6")
    services.promotion_approve(
        promotion=promotion_request(model_version=first, user=people["alice"], target="production"),
        user=people["carol"],
    )
    second = model_version_create(job=retrained_job, user=people["alice"], name="m6")
    promotion = promotion_request(model_version=second, user=people["alice"], target="production")

    def broken(**kwargs):
        raise DatabaseError("the database went away")

    monkeypatch.setattr(Deployment.objects, "update_or_create", broken)
    with pytest.raises(DatabaseError):
        services.promotion_approve(promotion=promotion, user=people["carol"])
    monkeypatch.undo()
    # Both or neither: MLflow points at what the database says is deployed, and the request is open.
    assert _alias(first.mlflow_name, "production") == first.version
    assert Deployment.objects.get(model_name="m6").model_version == first
    promotion.refresh_from_db()
    assert promotion.status == PromotionStatus.REQUESTED
    # ... so it can be approved once the database is back.
    services.promotion_approve(promotion=promotion, user=people["carol"])
    assert _alias(first.mlflow_name, "production") == second.version


def test_an_approval_mlflow_refuses_changes_nothing(people, trained_job, monkeypatch):
    from controlplane.errors import ServiceUnavailable

    version = model_version_create(job=trained_job, user=people["alice"], name="m7")
    promotion = promotion_request(model_version=version, user=people["alice"], target="staging")

    def down(**kwargs):
        raise ServiceUnavailable("MLflow could not set the alias: connection refused")

    monkeypatch.setattr(tracking, "alias_set", down)
    with pytest.raises(ServiceUnavailable):
        services.promotion_approve(promotion=promotion, user=people["carol"])
    monkeypatch.undo()
    promotion.refresh_from_db()
    assert promotion.status == PromotionStatus.REQUESTED
    assert not Deployment.objects.exists()
    assert _alias(version.mlflow_name, "staging") is None


def test_a_second_open_request_and_an_unknown_target_are_refused(people, trained_job):
    version = model_version_create(job=trained_job, user=people["alice"], name="m5")
    promotion_request(model_version=version, user=people["alice"], target="production")
    with pytest.raises(Conflict):
        promotion_request(model_version=version, user=people["bob"], target="production")
    with pytest.raises(ValidationFailed):
        promotion_request(model_version=version, user=people["bob"], target="moon")
    assert Promotion.objects.count() == 1


def test_a_job_that_merged_its_adapter_registers_the_whole_model(
    people, trained_job, tmp_path, mlflow_server
):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    # Where the engine logs a merged model: the job's own run, beside the adapter.
    MlflowClient(mlflow_server).log_artifacts(trained_job.mlflow_run_id, str(model), "model")
    merged = f"runs:/{trained_job.mlflow_run_id}/model"
    trained_job.artifacts = {**trained_job.artifacts, "model": merged}
    trained_job.save(update_fields=["artifacts"])

    version = model_version_create(job=trained_job, user=people["alice"], name="tiny-merged")

    assert version.source_uri == merged
    registered = MlflowClient(mlflow_server).get_model_version(version.mlflow_name, str(version.version))
    assert registered.source == merged


def test_only_a_succeeded_job_can_be_registered(people, api_for):
    job = job_make(people["demo"], people["alice"])
    response = api_for("alice").post("/api/v1/model-versions", {"job": job.pk, "name": "x"}, format="json")
    assert response.status_code == 409 and "queued" in response.json()["message"]
    assert job.status == JobStatus.QUEUED


def test_the_reconciler_heals_a_drifted_alias_and_a_stuck_approval(people, trained_job, retrained_job):
    from datetime import timedelta

    from django.utils import timezone

    first = model_version_create(job=trained_job, user=people["alice"], name="m8")
    services.promotion_approve(
        promotion=promotion_request(model_version=first, user=people["alice"], target="production"),
        user=people["carol"],
    )
    second = model_version_create(job=retrained_job, user=people["alice"], name="m8")
    # Someone (or a lost race) points the alias elsewhere behind the registry's back.
    tracking.alias_set(name=first.mlflow_name, alias="production", version=second.version)
    # An approval whose process died after claiming the decision.
    stuck = promotion_request(model_version=second, user=people["alice"], target="staging")
    services.promotion_transition(
        promotion_id=stuck.pk,
        from_status=PromotionStatus.REQUESTED,
        to=PromotionStatus.APPROVING,
        actor=people["carol"],
    )
    assert services.registry_reconcile()["reopened"] == 0  # too recent to call stuck
    PromotionEvent.objects.filter(promotion=stuck).update(at=timezone.now() - timedelta(minutes=10))

    assert services.registry_reconcile() == {"reopened": 1, "models_synced": 1}
    assert _alias(first.mlflow_name, "production") == first.version
    stuck.refresh_from_db()
    assert stuck.status == PromotionStatus.REQUESTED
    assert stuck.events.values_list("actor__username", flat=True).last() == "carol"
