"""A judge job over real parts: launched by the control plane's service, its pairs in the MLflow
server, run by the session's Celery worker on the tiny model, its verdicts read back by row."""

from __future__ import annotations

import pytest
from django.test import Client

from controlplane.datasets.models import DatasetVersion
from controlplane.site.demo import demo_jsonl
from controlplane.training.models import Job
from controlplane.training.services.judging import judge_job_create, judge_pairs_parse, judge_verdicts
from tests.conftest import PASSWORD
from tests.e2e.client import api, wait_for
from workers.spec import JudgeVerdict

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PAIRS = [
    {"row": 0, "prompt": "What is two plus three?", "answer_a": "Five.", "answer_b": "Six."},
    {"row": 1, "prompt": "What is four plus four?", "answer_a": "Eight.", "answer_b": "Eight."},
    {"row": 4, "prompt": "What is one plus one?", "answer_a": "Three.", "answer_b": "Two."},
]


def test_a_judge_job_runs_on_the_worker_and_its_verdicts_are_read_by_row(
    people, live_server, worker, tiny_model_uri, mlflow_server
):
    alice = api(live_server, "alice")
    base = alice.post("base-models", json={"project": "demo", "name": "judge", "uri": tiny_model_uri})
    assert base.status_code == 201, base.text
    dataset = alice.post(
        "datasets",
        data={"project": "demo", "name": "arithmetic"},
        files={"file": ("a.jsonl", demo_jsonl(), "application/jsonl")},
    )
    assert dataset.status_code == 201, dataset.text
    version = DatasetVersion.objects.get(pk=dataset.json()["id"])

    job = judge_job_create(
        project=people["demo"],
        user=people["alice"],
        dataset_version=version,
        judge_base_model_id=base.json()["id"],
        rubric="Prefer the answer that is right.",
        pairs=judge_pairs_parse(PAIRS),
    )
    finished, seen = wait_for(alice, job.pk, {"succeeded", "failed"}, timeout=180)

    assert finished["status"] == "succeeded", finished["error"]
    assert finished["kind"] == "evaluate" and seen[-1] == "succeeded"
    metrics = finished["metrics"]
    assert set(metrics) == {"judge_win_rate", "judge_tie_rate", "judge_consistency"}
    assert set(finished["artifacts"]) == {"log", "predictions"}
    verdicts = judge_verdicts(Job.objects.get(pk=job.pk))
    assert set(verdicts) == {0, 1, 4}
    assert set(verdicts.values()) <= {verdict.value for verdict in JudgeVerdict}
    # The same answer on both sides can only tie.
    assert verdicts[1] == "tie"
    scores = [JudgeVerdict(verdict).score for verdict in verdicts.values()]
    assert metrics["judge_win_rate"] == pytest.approx(sum(scores) / len(scores))
    assert metrics["judge_tie_rate"] == pytest.approx(
        sum(verdict == "tie" for verdict in verdicts.values()) / len(verdicts)
    )

    web = Client()
    web.login(username="alice", password=PASSWORD)
    page = web.get(f"/jobs/{job.pk}/")
    assert page.status_code == 200
    shown = f"<code>judge_win_rate</code></td><td>{metrics['judge_win_rate']:.4f}</td>"
    assert shown in page.content.decode()
    # An outsider learns nothing of it.
    assert api(live_server, "charlie").get(f"jobs/{job.pk}").status_code == 404
