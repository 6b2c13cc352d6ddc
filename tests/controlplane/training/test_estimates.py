"""The launch estimate, through the API and the launch page: numbers from the base model's config."""

from __future__ import annotations

import math

import pytest
from django.test import Client
from django.utils import timezone

from controlplane.training.models import Job, Worker
from tests.factories import base_model_make, dataset_version_make

pytestmark = pytest.mark.django_db

# The tiny Llama's parameter count, and its LoRA adapters on q_proj and v_proj at
# rank 8: tests/workers/test_estimate.py checks these formulas against the real models.
TINY_LORA_R8 = 2 * 8 * ((64 + 64) + (64 + 32))


@pytest.fixture
def local_model(people, demo_model_dir):
    return base_model_make(people["demo"], uri=str(demo_model_dir))


@pytest.fixture
def dataset(people):
    version = dataset_version_make(people["demo"], people["alice"])
    version.row_count = 1000
    version.stats = {"tokens": {"mean": 40.0, "sampled_rows": 1000}, "bytes": {"mean": 170.0}}
    version.save()
    return version


def _body(model, dataset, **config):
    return {"project": "demo", "base_model": model.pk, "dataset_version": dataset.pk, "config": config}


def test_estimate_of_a_lora_job_on_a_local_model(api_for, local_model, dataset):
    response = api_for("alice").post("/api/v1/jobs/estimate", _body(local_model, dataset), format="json")

    assert response.status_code == 200, response.content
    estimate = response.json()
    assert estimate["trainable_params"] == TINY_LORA_R8
    assert estimate["total_params"] > estimate["trainable_params"]
    assert estimate["steps"] == math.ceil(1000 / 8)
    assert estimate["tokens_per_epoch"] == 1000 * 41  # 40 tokens and the end-of-sequence token
    memory = estimate["memory_bytes"]
    assert memory["weights"] == 4 * estimate["total_params"]
    assert memory["total"] == sum(value for key, value in memory.items() if key != "total")
    assert estimate["fits"] is None  # a CPU job
    assert any("mean of 1000 rows" in note for note in estimate["notes"])
    assert Job.objects.count() == 0  # an estimate launches nothing


def test_estimate_of_a_model_in_the_artifact_store_reads_its_config(api_for, people, dataset, tiny_model_uri):
    model = base_model_make(people["demo"], uri=tiny_model_uri)

    response = api_for("bob").post(
        "/api/v1/jobs/estimate", _body(model, dataset, method={"name": "full"}), format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["trainable_params"] == response.json()["total_params"] > 0


def test_estimate_of_a_hub_model_says_it_has_no_config(api_for, people, dataset):
    model = base_model_make(people["demo"], uri="meta-llama/Llama-3.1-8B")

    response = api_for("alice").post("/api/v1/jobs/estimate", _body(model, dataset), format="json")

    assert response.status_code == 200, response.content
    estimate = response.json()
    assert estimate["total_params"] is None and estimate["memory_bytes"] is None
    assert estimate["steps"] == math.ceil(1000 / 8)
    assert any("does not download models" in note for note in estimate["notes"])


def test_estimate_compares_with_the_smallest_gpu_of_the_queue(api_for, local_model, dataset):
    gpu = {"index": 0, "name": "small", "memory_total_mb": 512}
    Worker.objects.create(name="w1", host="h", queues=["gpu"], gpus=[gpu], last_seen=timezone.now())
    big = {**gpu, "memory_total_mb": 80_000}
    Worker.objects.create(name="w2", host="h", queues=["gpu"], gpus=[big], last_seen=timezone.now())
    body = _body(local_model, dataset, resources={"gpus": 1})

    estimate = api_for("alice").post("/api/v1/jobs/estimate", body, format="json").json()

    assert estimate["gpu_memory_gib"] == 0.5
    # A GPU keeps about 1 GiB for its context and allocator: nothing fits in half a GiB.
    assert estimate["fits"] is False


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"hyperparameters": {"batch_size": 0}}, "config.hyperparameters.batch_size"),
        ({"method": {"name": "lora", "target_modules": ["c_attn"]}}, "c_attn"),
        ({"method": {"name": "dpo"}}, "config.method"),
    ],
)
def test_estimate_of_a_bad_config_is_a_400_with_a_reason(api_for, local_model, dataset, config, message):
    response = api_for("alice").post(
        "/api/v1/jobs/estimate", _body(local_model, dataset, **config), format="json"
    )

    assert response.status_code == 400, response.content
    assert message in response.json()["message"]


def test_estimate_of_odd_bodies_is_a_4xx_never_a_500(api_for, local_model, dataset):
    client = api_for("alice")
    for body, status in [
        ({**_body(local_model, dataset), "config": []}, 400),
        ({"project": "demo", "dataset_version": dataset.pk}, 400),
        ({**_body(local_model, dataset), "base_model": 10**6}, 404),
        ({**_body(local_model, dataset), "dataset_version": "x"}, 400),
        (["not", "an", "object"], 400),
    ]:
        response = client.post("/api/v1/jobs/estimate", body, format="json")
        assert response.status_code == status, (body, response.content)
        assert response.json()["message"]


def test_only_members_may_ask_for_an_estimate(api_for, local_model, dataset):
    body = _body(local_model, dataset)
    assert api_for("charlie").post("/api/v1/jobs/estimate", body, format="json").status_code == 404
    assert api_for("viv").post("/api/v1/jobs/estimate", body, format="json").status_code == 403


def _form(model, dataset, **fields):
    return {
        "base_model": model.pk,
        "dataset_version": dataset.pk,
        "method": "lora",
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "learning_rate": 2e-4,
        "epochs": 2,
        "batch_size": 8,
        "max_seq_length": 256,
        "seed": 42,
        "gpus": 0,
        "priority": 0,
        **fields,
    }


def test_the_launch_page_shows_the_estimate_of_its_form(people, local_model, dataset):
    page = Client()
    page.force_login(people["alice"])

    assert 'hx-post="/p/demo/jobs/estimate"' in page.get("/p/demo/jobs/new").content.decode()
    response = page.post("/p/demo/jobs/estimate", _form(local_model, dataset))

    assert response.status_code == 200
    html = response.content.decode()
    assert f'<dd id="job-estimate-steps">{2 * math.ceil(1000 / 8)}</dd>' in html
    assert f"{TINY_LORA_R8} trained" in html


def test_the_launch_page_says_why_it_cannot_estimate(people, local_model, dataset):
    page = Client()
    page.force_login(people["alice"])

    response = page.post("/p/demo/jobs/estimate", _form(local_model, dataset, batch_size=0))

    assert response.status_code == 200
    assert "Batch size" in response.content.decode()
    assert Job.objects.count() == 0
