"""A registered model with a history, made from rows directly (no MLflow): what the registry's page
tests read. Versions 1 and 2 of "arith-lora" went to production in turn, version 2 runs there now,
and alice asks for version 2 on staging; the training data has its checks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone

from controlplane.datasets.models import DatasetOperation, OperationKind, OperationStatus
from controlplane.registry.models import (
    Deployment,
    ModelVersion,
    Promotion,
    PromotionEvent,
    PromotionStatus,
)
from controlplane.registry.services import promotion_request
from controlplane.training.models import Job, JobStatus
from tests.factories import dataset_version_make, job_make

NAME = "arith-lora"


@dataclass
class History:
    versions: list[ModelVersion]
    approved: list[Promotion]
    open_request: Promotion


def _approved(version: ModelVersion, people, at) -> Promotion:
    promotion = Promotion.objects.create(
        model_version=version,
        target="production",
        requested_by=people["alice"],
        status=PromotionStatus.APPROVED,
        decided_by=people["carol"],
        decided_at=at,
        comment="better on the quiz",
    )
    PromotionEvent.objects.create(promotion=promotion, actor=people["alice"], to_status="requested")
    PromotionEvent.objects.create(
        promotion=promotion, actor=people["carol"], from_status="requested", to_status="approved"
    )
    return promotion


def history_make(people) -> History:
    demo, alice = people["demo"], people["alice"]
    versions, approved = [], []
    now = timezone.now()
    for number in (1, 2):
        job = job_make(demo, alice, config={"hyperparameters": {"learning_rate": 0.0003, "epochs": 2}})
        Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED, progress=1.0)
        version = ModelVersion.objects.create(
            project=demo,
            name=NAME,
            version=number,
            job=job,
            source_uri=f"runs:/run{number}/adapter",
            mlflow_name=f"demo.{NAME}",
            created_by=alice,
        )
        versions.append(version)
        approved.append(_approved(version, people, now - timedelta(hours=3 - number)))
    Deployment.objects.create(
        project=demo,
        model_name=NAME,
        target="production",
        model_version=versions[1],
        promotion=approved[1],
        approved_by=people["carol"],
        approved_at=now - timedelta(hours=1),
    )
    training = versions[1].job.dataset_version
    quiz = dataset_version_make(demo, alice)
    for kind, source, options, result in (
        (
            OperationKind.CONTAMINATION,
            quiz,
            {"train_version": training.pk},
            {"kind": "contamination", "contaminated_rows": 2, "eval_rows": 60, "train": str(training)},
        ),
        (
            OperationKind.PII_SCAN,
            training,
            {},
            {"kind": "pii_scan", "rows": 3, "kinds": {"email": {"rows": 1}}},
        ),
    ):
        DatasetOperation.objects.create(
            project=demo,
            kind=kind,
            name="check",
            source_version=source,
            options=options,
            status=OperationStatus.SUCCEEDED,
            result=result,
            created_by=alice,
        )
    open_request = promotion_request(
        model_version=versions[1], user=alice, target="staging", comment="ready for staging"
    )
    return History(versions=versions, approved=approved, open_request=open_request)
