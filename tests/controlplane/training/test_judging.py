"""Judge jobs on the control plane: the pairs stored in MLflow, the spec a worker gets, the refusals
of bad inputs (each a 4xx with a message, nothing stored), and the verdicts read back by row."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.test import Client
from django.urls import reverse
from mlflow import MlflowClient

from controlplane import tracking
from controlplane.errors import Conflict, DomainError, Forbidden, NotFound, ValidationFailed
from controlplane.training import services
from controlplane.training.models import Job, JobEvent, JobKind
from controlplane.training.services.judging import (
    JudgePair,
    judge_job_create,
    judge_pairs_parse,
    judge_verdicts,
)
from tests.conftest import PASSWORD
from tests.factories import FACTORY_QUEUE, base_model_make, dataset_version_make, job_make
from workers.spec import JUDGE_PAIRS_MAX, JobOutcome, JobResult, Resources, TrainedArtifactKind

pytestmark = pytest.mark.django_db

RUBRIC = "Prefer the answer that is right and short."
PAIRS = [
    JudgePair(row=0, prompt="Say hello.", answer_a="Hello!", answer_b="No."),
    JudgePair(row=2, prompt="Add two and three.", answer_a="Five.", answer_b="Six."),
]
ON_FACTORY_QUEUE = Resources(queue=FACTORY_QUEUE)


@pytest.fixture
def data(people):
    demo, alice = people["demo"], people["alice"]
    return {
        "base": base_model_make(demo),
        "rows": dataset_version_make(demo, alice, schema="instruction", row_count=3),
        "elsewhere_base": base_model_make(people["other"]),
        "elsewhere_rows": dataset_version_make(people["other"], people["charlie"]),
    }


def _succeed(job: Job, artifacts: dict[str, str]) -> Job:
    services.job_claim(job_id=job.pk, attempt=job.attempt, worker="w")
    return services.job_finish(
        job_id=job.pk,
        result=JobResult(attempt=job.attempt, worker="w", outcome=JobOutcome.SUCCEEDED, artifacts=artifacts),
    )


def _create(people, data, user: str = "alice", **change):
    arguments = {
        "project": people["demo"],
        "user": people[user],
        "dataset_version": data["rows"],
        "judge_base_model_id": data["base"].pk,
        "rubric": RUBRIC,
        "pairs": PAIRS,
        "resources": ON_FACTORY_QUEUE,
    } | change
    return judge_job_create(**arguments)


def test_a_judge_job_is_queued_with_its_pairs_stored_and_a_judge_spec(people, data, mlflow_server, tmp_path):
    job = _create(people, data)

    assert (job.kind, job.status, job.is_judge, job.is_evaluation) == (JobKind.EVALUATE, "queued", True, True)
    assert (job.base_model, job.dataset_version, job.source_job) == (data["base"], data["rows"], None)
    assert job.name.startswith("judge 2 pairs of ")
    assert JobEvent.objects.filter(job=job, to_status="queued", actor=people["alice"]).count() == 1
    spec = services.job_spec_build(job)
    assert spec.kind is JobKind.EVALUATE and spec.evaluation is None
    assert spec.judge is not None and spec.judge.rubric == RUBRIC
    assert spec.dataset_uris == [job.input_uri] and job.input_uri.startswith("runs:/")
    assert spec.trained_artifact is None and spec.queue == FACTORY_QUEUE
    # The pairs, as the worker will download them: one JSON object a line, in order.
    local = tracking.artifact_download(job.input_uri, dst=tmp_path)
    lines = [json.loads(line) for line in Path(local).read_text().splitlines()]
    assert [JudgePair.model_validate(line) for line in lines] == PAIRS
    # Stored among the project's runs, where its workers may read it and no other project's can.
    run_id = job.input_uri.removeprefix("runs:/").split("/")[0]
    experiment = MlflowClient(mlflow_server).get_run(run_id).info.experiment_id
    assert MlflowClient(mlflow_server).get_experiment(experiment).name == "tuneyard/demo/judge-inputs"


def test_a_finetune_judges_with_what_it_trained(people, data, mlflow_server):
    finetune = _succeed(job_make(people["demo"], people["alice"]), {"adapter": "runs:/abc/adapter"})

    job = _create(people, data, judge_base_model_id=None, judge_source_job_id=finetune.pk)

    assert (job.source_job, job.base_model) == (finetune, finetune.base_model)
    spec = services.job_spec_build(job)
    assert spec.trained_artifact is not None
    assert (spec.trained_artifact.kind, spec.trained_artifact.uri) == (
        TrainedArtifactKind.ADAPTER,
        "runs:/abc/adapter",
    )
    assert spec.base_model_uri == finetune.base_model.uri


def _too_many() -> list[JudgePair]:
    return [JudgePair(row=n, prompt="Q", answer_a="a", answer_b="b") for n in range(JUDGE_PAIRS_MAX + 1)]


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"rubric": "   "}, ValidationFailed, "The judge's rubric: String should have at least 1"),
        ({"rubric": "x" * 4001}, ValidationFailed, "at most 4000 characters"),
        ({"pairs": []}, ValidationFailed, "There are no pairs to judge."),
        ({"pairs": _too_many()}, ValidationFailed, f"at most {JUDGE_PAIRS_MAX} pairs, not"),
        ({"pairs": [PAIRS[0], PAIRS[0]]}, ValidationFailed, "Row 0 is given twice"),
        ({"judge_base_model_id": None}, ValidationFailed, "Say who judges"),
        ({"judge_source_job_id": 1}, ValidationFailed, "Say who judges"),
        ({"resources": Resources(gpus=2)}, ValidationFailed, "The judge's settings: a judge runs in one"),
    ],
)
def test_a_bad_judge_job_is_refused_with_a_message_and_nothing_stored(people, data, change, error, message):
    # No MLflow server here: an upload before the refusal would fail with another error.
    with pytest.raises(error, match=message) as refused:
        _create(people, data, **change)

    assert 400 <= refused.value.status < 500
    assert not Job.objects.exists()


def test_a_judge_from_elsewhere_is_not_found(people, data):
    elsewhere_job = job_make(people["other"], people["charlie"])

    with pytest.raises(NotFound):
        _create(people, data, judge_base_model_id=data["elsewhere_base"].pk)
    with pytest.raises(NotFound):
        _create(people, data, judge_base_model_id=None, judge_source_job_id=elsewhere_job.pk)
    with pytest.raises(NotFound):
        _create(people, data, dataset_version=data["elsewhere_rows"])
    assert not Job.objects.filter(project=people["demo"]).exists()


def test_a_judge_must_have_trained_something(people, data):
    running = job_make(people["demo"], people["alice"])

    with pytest.raises(Conflict, match=f"Job {running.pk} is queued with nothing trained"):
        _create(people, data, judge_base_model_id=None, judge_source_job_id=running.pk)


def test_an_evaluation_is_not_a_judge(people, data, mlflow_server):
    judge = _create(people, data)

    with pytest.raises(ValidationFailed, match="is an evaluation"):
        _create(people, data, judge_base_model_id=None, judge_source_job_id=judge.pk)


@pytest.mark.parametrize(("user", "error"), [("charlie", NotFound), ("viv", Forbidden)])
def test_only_members_of_the_project_launch_a_judge(people, data, user, error):
    with pytest.raises(error):
        _create(people, data, user=user)

    assert not Job.objects.exists()


def test_pairs_from_plain_dicts_name_the_bad_one():
    good = {"row": 1, "prompt": "Q", "answer_a": "a", "answer_b": "b"}

    assert judge_pairs_parse([good]) == [JudgePair(row=1, prompt="Q", answer_a="a", answer_b="b")]
    with pytest.raises(ValidationFailed, match="Pair 2 is not a pair: answer_b: String should have at most"):
        judge_pairs_parse([good, good | {"answer_b": "b" * 20_001}])
    with pytest.raises(ValidationFailed, match="Pair 1 is not a pair: prompt: Field required"):
        judge_pairs_parse([{"row": 1, "answer_a": "a", "answer_b": "b"}])


def test_a_judge_job_is_not_cloned(people, data, mlflow_server, api_for):
    job = _create(people, data)

    with pytest.raises(Conflict, match="run the suite again"):
        services.job_clone(job=job, user=people["alice"])
    response = api_for("alice").post(f"/api/v1/jobs/{job.pk}/clone")
    assert response.status_code == 409 and response.json()["error"] == "conflict"
    assert response.json()["message"].startswith(f"Job {job.pk} judges answers")
    assert api_for("charlie").post(f"/api/v1/jobs/{job.pk}/clone").status_code == 404


def _verdicts_table(tmp_path: Path, rows: list[tuple[int, str, float]]) -> str:
    """A judge's predictions table in the run's artifacts, as the engine writes it."""
    path = tmp_path / "predictions.parquet"
    columns = {
        "row": [row for row, _, _ in rows],
        "input": ["Q"] * len(rows),
        "prediction": [verdict for _, verdict, _ in rows],
        "extracted": [None] * len(rows),
        "reference": [""] * len(rows),
        "score": [score for _, _, score in rows],
    }
    pq.write_table(pa.table(columns), path)
    return tracking.artifact_upload(
        path, experiment="tuneyard/demo/tests", run_name="judge", artifact_path="tables", tags={}
    )


def test_the_verdicts_of_a_succeeded_judge_are_read_by_row(people, data, mlflow_server, tmp_path):
    job = _create(people, data)
    with pytest.raises(Conflict, match="its verdicts come once it succeeds"):
        judge_verdicts(job)
    table = _verdicts_table(tmp_path, [(0, "challenger", 1.0), (2, "tie", 0.5), (5, "champion", 0.0)])

    job = _succeed(job, {"predictions": table})

    assert judge_verdicts(job) == {0: "challenger", 2: "tie", 5: "champion"}


def test_verdicts_are_asked_of_judge_jobs_only(people):
    finetune = _succeed(job_make(people["demo"], people["alice"]), {"adapter": "runs:/abc/adapter"})

    with pytest.raises(ValidationFailed, match="is not a judge job"):
        judge_verdicts(finetune)


def test_unreadable_verdicts_are_a_conflict_not_a_crash(people, data, mlflow_server):
    job = _succeed(_create(people, data), {"predictions": "/etc/passwd"})

    with pytest.raises(Conflict, match="cannot be read") as refused:
        judge_verdicts(job)
    assert isinstance(refused.value, DomainError)


def test_the_launch_form_does_not_copy_a_judge_job(people, data, mlflow_server):
    job = _create(people, data)
    web = Client()
    web.login(username="alice", password=PASSWORD)

    page = web.get(reverse("evaluate-new", args=["demo"]) + f"?from={job.pk}", follow=True)

    assert page.status_code == 200
    assert f"Job {job.pk} is a judge job, run by its suite; the form starts empty." in page.content.decode()
    other = Client()
    other.login(username="charlie", password=PASSWORD)
    assert other.get(reverse("evaluate-new", args=["demo"]) + f"?from={job.pk}").status_code == 404
