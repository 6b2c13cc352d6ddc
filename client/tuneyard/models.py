"""Typed views of what the API answers. Each keeps the whole answer in ``raw``; the fields are the
ones a pipeline reads most, so an editor completes them and a type checker checks them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

FINISHED = frozenset({"succeeded", "failed", "cancelled"})

M = TypeVar("M", bound="Model")


@dataclass(frozen=True)
class Model:
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_api(cls: type[M], data: dict[str, Any]) -> M:
        names = {f.name for f in dataclasses.fields(cls)} - {"raw"}
        return cls(raw=data, **{name: data.get(name) for name in names})


@dataclass(frozen=True)
class Project(Model):
    slug: str = ""
    name: str = ""
    role: str = ""


@dataclass(frozen=True)
class BaseModel(Model):
    id: int = 0
    project: str = ""
    name: str = ""
    uri: str = ""


@dataclass(frozen=True)
class DatasetVersion(Model):
    id: int = 0
    project: str = ""
    name: str = ""
    version: int = 0
    format: str = ""
    sha256: str = ""
    row_count: int = 0
    size_bytes: int = 0


@dataclass(frozen=True)
class Job(Model):
    id: int = 0
    project: str = ""
    name: str = ""
    kind: str = ""
    status: str = ""
    attempt: int = 1
    progress: float = 0.0
    base_model: int = 0
    dataset_version: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    mlflow_run_id: str = ""
    created_by: str = ""
    created_at: str = ""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass(frozen=True)
class ModelVersion(Model):
    id: int = 0
    project: str = ""
    name: str = ""
    mlflow_version: int = 0
    job: int = 0
    mlflow_name: str = ""
    mlflow_uri: str = ""


@dataclass(frozen=True)
class Promotion(Model):
    id: int = 0
    model_version: int = 0
    model_name: str = ""
    mlflow_version: int = 0
    target: str = ""
    status: str = ""
    requested_by: str = ""
    decided_by: str | None = None
    kind: str = "promote"
    override_reason: str = ""


@dataclass(frozen=True)
class Deployment(Model):
    project: str = ""
    target: str = ""
    model_name: str = ""
    model_version: int = 0
    mlflow_version: int = 0
    mlflow_model_uri: str = ""
    approved_by: str = ""
    approved_at: str = ""


@dataclass(frozen=True)
class Sweep(Model):
    id: int = 0
    project: str = ""
    name: str = ""
    status: str = ""
    n_trials: int = 0
    trials_launched: int = 0
    best_trial: dict[str, Any] | None = None


@dataclass(frozen=True)
class Webhook(Model):
    id: int = 0
    project: str = ""
    url: str = ""
    event_types: list[str] = field(default_factory=list)
    enabled: bool = True
    secret: str | None = None


@dataclass(frozen=True)
class Delivery(Model):
    id: int = 0
    webhook: int = 0
    message_id: str = ""
    event_type: str = ""
    status: str = ""
    attempts: int = 0
    response_status: int | None = None


@dataclass(frozen=True)
class Suite(Model):
    id: int = 0
    project: str = ""
    model_name: str = ""
    name: str = ""
    version: int = 0
    digest: str = ""


@dataclass(frozen=True)
class SuiteRun(Model):
    id: int = 0
    suite: int = 0
    suite_name: str = ""
    suite_version: int = 0
    model_version: int = 0
    status: str = ""
    results: dict[str, Any] = field(default_factory=dict)
    digest: str = ""
    error: str = ""

    @property
    def finished(self) -> bool:
        return self.status != "running"
