"""End-to-end fixtures: a project with the tiny base model and a dataset, made through the API."""

from __future__ import annotations

import pytest

from controlplane.site.demo import demo_jsonl
from tests.e2e.client import api


@pytest.fixture
def setup(people, live_server, worker, tiny_model_uri):
    alice = api(live_server, "alice")
    base = alice.post("base-models", json={"project": "demo", "name": "tiny", "uri": tiny_model_uri})
    assert base.status_code == 201, base.text
    dataset = alice.post(
        "datasets",
        data={"project": "demo", "name": "arithmetic"},
        files={"file": ("a.jsonl", demo_jsonl(), "application/jsonl")},
    )
    assert dataset.status_code == 201, dataset.text
    return {"alice": alice, "base": base.json()["id"], "dataset": dataset.json()["id"]}
