"""Small helpers that make rows directly, for tests that need no MLflow."""

from __future__ import annotations

import itertools

from controlplane.datasets.models import Dataset, DatasetVersion
from controlplane.training.models import BaseModel, Job
from controlplane.training.services import job_create
from workers.spec import TrainingConfig

_numbers = itertools.count(1)


def base_model_make(project, *, uri: str = "runs:/0/model") -> BaseModel:
    return BaseModel.objects.create(project=project, name=f"base-{next(_numbers)}", uri=uri)


def dataset_version_make(
    project,
    user,
    *,
    uri: str = "runs:/0/dataset/d.jsonl",
    schema: str = "instruction",
    row_count: int = 3,
) -> DatasetVersion:
    n = next(_numbers)
    dataset = Dataset.objects.create(project=project, name=f"data-{n}")
    return DatasetVersion.objects.create(
        dataset=dataset,
        version=1,
        format=schema,
        sha256=f"{n:064d}",
        uri=uri,
        filename="d.jsonl",
        row_count=row_count,
        size_bytes=100,
        created_by=user,
    )


# No worker listens here: a job made by a test stays for the test to play the
# worker's part, even while the session's real worker serves the "cpu" queue.
FACTORY_QUEUE = "factory-test"


def job_make(project, user, *, config: dict | None = None, priority: int = 0) -> Job:
    config = dict(config or {})
    config["resources"] = {"queue": FACTORY_QUEUE, **config.get("resources", {})}
    return job_create(
        project=project,
        user=user,
        base_model_id=base_model_make(project).pk,
        dataset_version_id=dataset_version_make(project, user).pk,
        config=TrainingConfig.model_validate(config),
        priority=priority,
    )


def model_version_make(job: Job, user, *, name: str = "tiny-lora"):
    from controlplane.registry.models import ModelVersion

    return ModelVersion.objects.create(
        project=job.project,
        name=name,
        version=1,
        job=job,
        source_uri="runs:/x/adapter",
        mlflow_name=f"{job.project.slug}.{name}",
        created_by=user,
    )


def promotion_make(model_version, user, *, target: str = "production"):
    from controlplane.registry.services import promotion_request

    return promotion_request(model_version=model_version, user=user, target=target)
