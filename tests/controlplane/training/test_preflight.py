"""Checks before a job is queued: a job whose every row is longer than max_seq_length is refused at
once; rows that will be cut, a queue no worker ever read and a queue without the GPUs asked for are
said in the launch's answer, the estimate and the launch page."""

from __future__ import annotations

import pytest
from django.utils import timezone

from controlplane.datasets.models import DatasetOperation
from controlplane.training.models import Job, Worker
from tests.factories import base_model_make, dataset_version_make

pytestmark = pytest.mark.django_db
QUEUE = "preflight"


def _counted(project, user, base, *, lengths: tuple[int, int], edges: list[int], counts: list[int]):
    """A dataset version whose token lengths were counted with ``base``'s tokenizer at its upload."""
    version = dataset_version_make(project, user)
    low, high = lengths
    version.stats = {
        "tokens": {
            "count": sum(counts),
            "min": low,
            "max": high,
            "histogram": {"edges": edges, "counts": counts},
        }
    }
    version.save(update_fields=["stats"])
    DatasetOperation.objects.create(
        project=project, name="d", filename="d.jsonl", size_bytes=1, created_by=user,
        version=version, options={"tokenizer": base.pk},
    )  # fmt: skip
    return version


def _reader(queue: str = QUEUE, gpus: int = 0) -> None:
    Worker.objects.create(
        name=f"w-{queue}-{gpus}", host="h", queues=[queue], last_seen=timezone.now(),
        gpus=[{"index": i, "name": "H100", "memory_total_mb": 80_000} for i in range(gpus)],
    )  # fmt: skip


def _body(base, version, *, max_seq_length: int = 64, **resources) -> dict:
    return {
        "project": "demo",
        "base_model": base.pk,
        "dataset_version": version.pk,
        "config": {
            "hyperparameters": {"max_seq_length": max_seq_length},
            "resources": {"queue": QUEUE, **resources},
        },
    }


def test_a_job_whose_every_row_is_longer_than_max_seq_length_is_refused_before_it_is_queued(people, api_for):
    base = base_model_make(people["demo"])
    version = _counted(
        people["demo"], people["alice"], base, lengths=(100, 300), edges=[100, 200, 301], counts=[5, 5]
    )
    _reader()
    for path in ("/api/v1/jobs", "/api/v1/jobs/estimate"):
        answer = api_for("alice").post(path, _body(base, version), format="json")
        assert answer.status_code == 400, answer.json()
        message = answer.json()["message"]
        assert "max_seq_length" in message and "the shortest has 100" in message and base.name in message
    assert not Job.objects.exists()
    # Raised past the shortest row, it goes, and says some rows will be cut.
    answer = api_for("alice").post("/api/v1/jobs", _body(base, version, max_seq_length=150), format="json")
    assert answer.status_code == 201
    assert any("at least 50% of the rows" in w and "cut to fit" in w for w in answer.json()["warnings"])


def test_token_lengths_counted_with_another_tokenizer_are_not_held_against_the_job(people, api_for):
    base, other = base_model_make(people["demo"]), base_model_make(people["demo"])
    version = _counted(
        people["demo"], people["alice"], other, lengths=(100, 300), edges=[100, 301], counts=[3]
    )
    _reader()
    answer = api_for("alice").post("/api/v1/jobs", _body(base, version), format="json")
    assert answer.status_code == 201 and answer.json()["warnings"] == []


def test_a_queue_no_worker_ever_read_and_one_without_the_gpus_asked_are_said(people, api_for):
    base, version = base_model_make(people["demo"]), dataset_version_make(people["demo"], people["alice"])
    never = api_for("alice").post("/api/v1/jobs", _body(base, version), format="json").json()
    assert never["warnings"] == [
        f"no worker has ever read queue {QUEUE}: the job waits until one does "
        "(start a worker with that queue, or choose another)."
    ]
    _reader(gpus=1)
    estimate = api_for("alice").post("/api/v1/jobs/estimate", _body(base, version, gpus=2), format="json")
    assert estimate.status_code == 200, estimate.json()
    assert estimate.json()["warnings"] == [
        f"no worker that reads queue {QUEUE} has 2 GPU(s) (the most is 1): the job waits until one does."
    ]
    assert (
        api_for("alice").post("/api/v1/jobs", _body(base, version, gpus=1), format="json").json()["warnings"]
        == []
    )


def test_the_launch_page_says_the_warnings_on_the_new_jobs_page(people, client):
    base, version = base_model_make(people["demo"]), dataset_version_make(people["demo"], people["alice"])
    client.force_login(people["alice"])
    form = {
        "base_model": base.pk, "dataset_version": version.pk, "method": "lora", "learning_rate": 0.001,
        "epochs": 1, "batch_size": 4, "max_seq_length": 64, "seed": 0, "gpus": 0, "priority": 0,
        "queue": QUEUE, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0,
    }  # fmt: skip
    page = client.post("/p/demo/jobs/new", form, follow=True)
    assert page.status_code == 200 and Job.objects.count() == 1
    assert f"No worker has ever read queue {QUEUE}" in page.content.decode()
