from __future__ import annotations

import pytest
from mlflow import MlflowClient

from controlplane import tracking
from controlplane.errors import Conflict, Forbidden, ValidationFailed
from controlplane.registry import services
from controlplane.registry.models import Deployment, Promotion, PromotionEvent, PromotionStatus
from controlplane.registry.services import model_version_create, promotion_request
from controlplane.training.models import JobStatus
from controlplane.training.services import job_claim, job_finish
from tests.factories import job_make
from workers.spec import JobOutcome, JobResult

pytestmark = pytest.mark.django_db


@pytest.fixture
def trained_job(people, mlflow_server, tmp_path):
    """A succeeded job whose adapter really is in MLflow."""
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    uri = tracking.artifact_upload(
        adapter, experiment="tests/jobs", run_name="job", artifact_path="adapter", tags={}
    )
    job = job_make(people["demo"], people["alice"])
    job_claim(job_id=job.pk, attempt=1, worker="w1")
    run_id = uri.split("/")[1]
    job_finish(
        job_id=job.pk,
        result=JobResult(
            attempt=1,
            worker="w1",
            outcome=JobOutcome.SUCCEEDED,
            artifacts={"adapter": uri},
            mlflow_run_id=run_id,
        ),
    )
    job.refresh_from_db()
    return job


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


def test_an_approval_that_loses_the_race_puts_the_alias_back(people, trained_job, monkeypatch):
    version = model_version_create(job=trained_job, user=people["alice"], name="m4")
    first = promotion_request(model_version=version, user=people["alice"], target="production")
    services.promotion_approve(promotion=first, user=people["carol"])
    second_version = model_version_create(job=trained_job, user=people["alice"], name="m4")
    second = promotion_request(model_version=second_version, user=people["alice"], target="production")

    real = services.promotion_transition

    def rival_rejects_first(**kwargs):
        real(
            promotion_id=second.pk,
            from_status=PromotionStatus.REQUESTED,
            to=PromotionStatus.REJECTED,
            actor=people["bob"],
        )
        return real(**kwargs)

    monkeypatch.setattr(services, "promotion_transition", rival_rejects_first)
    with pytest.raises(Conflict):
        services.promotion_approve(promotion=second, user=people["carol"])
    # Both or neither: the alias points at the version deployed before.
    assert _alias(version.mlflow_name, "production") == version.version
    assert Deployment.objects.get().model_version == version


def test_a_second_open_request_and_an_unknown_target_are_refused(people, trained_job):
    version = model_version_create(job=trained_job, user=people["alice"], name="m5")
    promotion_request(model_version=version, user=people["alice"], target="production")
    with pytest.raises(Conflict):
        promotion_request(model_version=version, user=people["bob"], target="production")
    with pytest.raises(ValidationFailed):
        promotion_request(model_version=version, user=people["bob"], target="moon")
    assert Promotion.objects.count() == 1


def test_only_a_succeeded_job_can_be_registered(people, api_for):
    job = job_make(people["demo"], people["alice"])
    response = api_for("alice").post("/api/v1/model-versions", {"job": job.pk, "name": "x"}, format="json")
    assert response.status_code == 409 and "queued" in response.json()["message"]
    assert job.status == JobStatus.QUEUED
