"""Judge tasks: once the challenger's and the champion's answers to a generation task are both in,
a judge job compares them pair by pair (the challenger's as A), joins the challenger's run, and its
win rate reaches the comparison and the gate. MLflow is real: the answers and the pairs live there."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from controlplane import tracking
from controlplane.evidence import gates, suite_results, suites
from controlplane.evidence.models import SuiteRun, SuiteRunJob
from controlplane.training.models import Job, JobStatus
from controlplane.training.services import job_claim, job_finish
from tests.controlplane.evidence.test_suites import deploy, version_make
from tests.factories import FACTORY_QUEUE, base_model_make, dataset_version_make, promotion_make
from workers.spec import JobOutcome, JobResult

pytestmark = pytest.mark.django_db

ROWS = ["What is 2+2?", "Name a colour.", "Say hello."]


def _answers(tmp_path: Path, predictions: list[str]) -> str:
    folder = tmp_path / uuid.uuid4().hex
    folder.mkdir()
    table = folder / "predictions.json"
    data = [
        [row, prompt, answer, "", None]
        for row, (prompt, answer) in enumerate(zip(ROWS, predictions, strict=True))
    ]
    table.write_text(
        json.dumps({"columns": ["row", "input", "prediction", "reference", "score"], "data": data})
    )
    return tracking.artifact_upload(
        table, experiment="tests/judge", run_name="answers", artifact_path="", tags={}
    )


def _finish(job: Job, *, metrics: dict, artifacts: dict | None = None) -> None:
    job_claim(job_id=job.pk, attempt=1, worker="w1")
    job_finish(
        job_id=job.pk,
        result=JobResult(
            attempt=1, worker="w1", outcome=JobOutcome.SUCCEEDED, metrics=metrics, artifacts=artifacts or {}
        ),
    )
    suites.job_finished(job.pk)


def test_a_judge_compares_both_versions_answers_and_its_win_rate_reaches_the_gate(
    people, mlflow_server, tmp_path, django_capture_on_commit_callbacks
):
    demo, alice, carol = people["demo"], people["alice"], people["carol"]
    champion, challenger = version_make(demo, alice), version_make(demo, alice)
    judge = base_model_make(demo)
    prompts = dataset_version_make(demo, alice, schema="instruction", row_count=3)
    tasks = [
        {
            "name": "answers",
            "dataset_version": prompts.pk,
            "evaluation": {"metrics": ["exact_match"]},
            "resources": {"queue": FACTORY_QUEUE},
        },
        {
            "name": "judged",
            "judge": {"base_model": judge.pk},
            "rubric": "Which answer is right?",
            "of_task": "answers",
        },
    ]
    suites.suite_create(project=demo, user=alice, model_name=champion.name, name="core", tasks=tasks)
    deploy(champion, carol)
    rule = {"kind": "judge_win_rate", "suite": "core", "task": "judged", "min": 0.5}
    gates.gate_policy_set(
        project=demo, user=carol, model_name=champion.name, target="production", rules=[rule]
    )
    with django_capture_on_commit_callbacks(execute=True):
        promotion = promotion_make(challenger, alice)
    mine = SuiteRun.objects.get(model_version=challenger)
    theirs = SuiteRun.objects.get(model_version=champion)
    [result] = gates.gate_report(promotion=promotion)["rules"]
    assert result["status"] == "pending" and "waiting" in result["detail"]

    _finish(
        mine.task_jobs.get().job,
        metrics={"exact_match": 0.0},
        artifacts={"predictions": _answers(tmp_path, ["4", "blue", "hello"])},
    )
    assert not SuiteRunJob.objects.filter(task="judged").exists(), "the champion has not answered yet"
    _finish(
        theirs.task_jobs.get().job,
        metrics={"exact_match": 0.0},
        artifacts={"predictions": _answers(tmp_path, ["5", "", "bye"])},
    )
    link = SuiteRunJob.objects.select_related("job").get(task="judged")
    assert link.run == mine and link.job.is_judge and link.job.base_model == judge
    assert link.job.status == JobStatus.QUEUED and link.job.dataset_version == prompts
    pairs_file = tracking.artifact_download(link.job.input_uri, dst=tmp_path / "pairs")
    pairs = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    assert [(p["row"], p["prompt"], p["answer_a"], p["answer_b"]) for p in pairs] == [
        (0, "What is 2+2?", "4", "5"),
        (1, "Name a colour.", "blue", ""),
        (2, "Say hello.", "hello", "bye"),
    ]
    # A reconciler finishing the same jobs again starts no second judge.
    suites.job_finished(mine.task_jobs.get(task="answers").job_id)
    assert SuiteRunJob.objects.filter(task="judged").count() == 1
    mine.refresh_from_db()
    assert mine.status == "succeeded", "the run settles on its evaluation tasks"

    comparison = suite_results.suite_comparison(promotion=promotion)
    judged = comparison["suites"][0]["tasks"][1]
    assert judged["judge"] and judged["state"] == "pending"
    _finish(
        link.job, metrics={"judge_win_rate": 0.8333, "judge_tie_rate": 0.3333, "judge_consistency": 0.6667}
    )
    [result] = gates.gate_report(promotion=promotion)["rules"]
    assert result["status"] == "pass" and result["figures"]["win_rate"] == 0.8333
    assert (
        suite_results.suite_comparison(promotion=promotion)["suites"][0]["tasks"][1]["metrics"][
            "judge_win_rate"
        ]
        == 0.8333
    )
