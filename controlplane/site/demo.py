"""The demo a fresh install starts with: users, a project, a tiny base model and a small dataset.

The base model is built from a config with a tokenizer trained here, so the
demo (and the tests) need no model hub.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import TypedDict

from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile

from controlplane import tracking
from controlplane.accounts.models import Project, Role, User
from controlplane.accounts.services import member_add, project_create
from controlplane.datasets.models import DatasetVersion
from controlplane.datasets.services import dataset_version_create
from controlplane.training.models import BaseModel

DEMO_PASSWORD = "tuneyard-demo"
ADMIN_PASSWORD = "tuneyard-admin"
DEMO_USERS = {"alice": Role.MEMBER, "bob": Role.MEMBER, "carol": Role.APPROVER}
TINY_MODEL_NAME = "tiny-llama"
DEMO_DATASET_NAME = "arithmetic-instructions"

_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def demo_instruction_rows(count: int = 64, *, seed: int = 0) -> list[dict[str, str]]:
    """A small instruction dataset with a pattern a tiny model can learn in a minute."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        a, b = rng.randrange(5), rng.randrange(5)
        rows.append(
            {
                "instruction": "Add the two numbers and answer in words.",
                "input": f"{_WORDS[a]} plus {_WORDS[b]}",
                "output": _WORDS[a + b],
            }
        )
    return rows


def demo_jsonl(count: int = 64) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in demo_instruction_rows(count)).encode()


def tiny_base_model_register(project: Project) -> BaseModel:
    """Build the tiny model, store it in MLflow's artifact store, and register it as a base model."""
    existing = BaseModel.objects.filter(project=project, name=TINY_MODEL_NAME).first()
    if existing is not None:
        return existing
    from workers.tinymodel import build_tiny_model  # torch: only when a model is built

    corpus = [f"{r['instruction']} {r['input']} {r['output']}" for r in demo_instruction_rows(256)]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(Path(tmp) / "model", corpus)
        uri = tracking.artifact_upload(
            model_dir,
            experiment=f"tuneyard/{project.slug}/base-models",
            run_name=TINY_MODEL_NAME,
            artifact_path="model",
            tags={"tuneyard.project": project.slug, "tuneyard.base_model": TINY_MODEL_NAME},
        )
    return BaseModel.objects.create(
        project=project,
        name=TINY_MODEL_NAME,
        uri=uri,
        description="A 2-layer Llama built from a config, with a BPE tokenizer trained locally.",
    )


class DemoSeeded(TypedDict):
    """What demo_seed made (or found from an earlier run)."""

    project: Project
    users: dict[str, User]
    base_model: BaseModel
    dataset: DatasetVersion


def demo_seed() -> DemoSeeded:
    user_model = get_user_model()
    if not user_model.objects.filter(username="admin").exists():
        user_model.objects.create_superuser("admin", "admin@example.com", ADMIN_PASSWORD)
    project = project_create(slug="demo", name="Demo project")
    users = {
        name: member_add(project=project, username=name, role=role, password=DEMO_PASSWORD)
        for name, role in DEMO_USERS.items()
    }
    base_model = tiny_base_model_register(project)
    dataset = DatasetVersion.objects.filter(dataset__project=project, dataset__name=DEMO_DATASET_NAME).first()
    if dataset is None:
        dataset = dataset_version_create(
            project=project,
            user=users["alice"],
            name=DEMO_DATASET_NAME,
            upload=SimpleUploadedFile("arithmetic.jsonl", demo_jsonl()),
        )
    return {"project": project, "users": users, "base_model": base_model, "dataset": dataset}
