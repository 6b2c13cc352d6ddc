"""Evaluate jobs on the control plane: launched from the API and the page, checked at the edge,
run through the same lifecycle as a finetune, never registered as a model version."""

from __future__ import annotations

import pytest
from django.test import Client

from controlplane.training import services
from controlplane.training.models import Job, JobKind, JobStatus
from tests.conftest import PASSWORD
from tests.factories import FACTORY_QUEUE, base_model_make, dataset_version_make, job_make
from workers.spec import EvaluateConfig, JobOutcome, JobResult, TrainedArtifactKind

pytestmark = pytest.mark.django_db

MC = {"evaluation": {"metrics": ["multiple_choice"]}, "resources": {"queue": FACTORY_QUEUE}}


@pytest.fixture
def data(people):
    demo, alice = people["demo"], people["alice"]
    return {
        "base": base_model_make(demo),
        "mc": dataset_version_make(demo, alice, schema="multiple_choice", row_count=5, uri="runs:/d/mc"),
        "mc_pool": dataset_version_make(
            demo, alice, schema="multiple_choice", row_count=3, uri="runs:/d/pool"
        ),
        "instruction": dataset_version_make(demo, alice, schema="instruction"),
        "text": dataset_version_make(demo, alice, schema="text"),
        "elsewhere": dataset_version_make(people["other"], people["charlie"], schema="multiple_choice"),
    }


def _succeed(job: Job, artifacts: dict[str, str]) -> Job:
    services.job_claim(job_id=job.pk, attempt=job.attempt, worker="w")
    return services.job_finish(
        job_id=job.pk,
        result=JobResult(attempt=job.attempt, worker="w", outcome=JobOutcome.SUCCEEDED, artifacts=artifacts),
    )


@pytest.fixture
def finetune(people):
    job = job_make(people["demo"], people["alice"])
    return _succeed(job, {"adapter": "runs:/abc/adapter", "log": "runs:/abc/logs/attempt-1.log"})


def _body(data, **change):
    return (
        {"project": "demo", "kind": "evaluate", "base_model": data["base"].pk}
        | {
            "dataset_version": data["mc"].pk,
            "config": MC,
        }
        | change
    )


def test_an_evaluate_job_of_a_base_model_is_queued_with_an_evaluate_spec(api_for, data):
    response = api_for("alice").post("/api/v1/jobs", _body(data), format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["kind"], body["status"], body["source_job"]) == ("evaluate", "queued", None)
    job = Job.objects.get(pk=body["id"])
    spec = services.job_spec_build(job)
    assert spec.kind is JobKind.EVALUATE
    assert spec.evaluation is not None and spec.evaluation.metrics == ["multiple_choice"]
    assert (spec.base_model_uri, spec.dataset_uris) == (data["base"].uri, ["runs:/d/mc"])
    assert spec.trained_artifact is None and spec.fewshot_dataset_uri is None
    assert spec.queue == FACTORY_QUEUE and spec.trust_remote_code is False
    # What a site admin allows for the base model holds for its evaluations too.
    type(data["base"]).objects.filter(pk=data["base"].pk).update(trust_remote_code=True)
    job.refresh_from_db()
    assert services.job_spec_build(Job.objects.get(pk=job.pk)).trust_remote_code is True


def test_a_finetunes_adapter_is_evaluated_on_its_own_base_model(api_for, data, finetune):
    body = _body(data, source_job=finetune.pk, fewshot_dataset_version=data["mc_pool"].pk)
    body.pop("base_model")
    body["config"] = {**MC, "evaluation": {"metrics": ["multiple_choice"], "num_fewshot": 2}}

    response = api_for("bob").post("/api/v1/jobs", body, format="json")

    assert response.status_code == 201, response.content
    spec = services.job_spec_build(Job.objects.get(pk=response.json()["id"]))
    assert spec.base_model_uri == finetune.base_model.uri
    assert spec.trained_artifact is not None
    assert (spec.trained_artifact.kind, spec.trained_artifact.uri) == (
        TrainedArtifactKind.ADAPTER,
        "runs:/abc/adapter",
    )
    assert spec.fewshot_dataset_uri == "runs:/d/pool" and spec.evaluation.num_fewshot == 2


def _refused(client, body, status: int, words: str) -> None:
    before = Job.objects.count()
    response = client.post("/api/v1/jobs", body, format="json")
    assert response.status_code == status, (body, response.content)
    assert response.json()["error"] and words in response.json()["message"], (body, response.json())
    assert Job.objects.count() == before


def _evaluation(**fields) -> dict:
    return {"evaluation": fields, "resources": {"queue": FACTORY_QUEUE}}


def test_metrics_the_datasets_schema_cannot_give_are_400s_that_store_nothing(api_for, data):
    alice = api_for("alice")
    cases = [
        (
            {"dataset_version": data["instruction"].pk},
            "multiple_choice needs a dataset of schema multiple_choice",
        ),
        (
            {"dataset_version": data["text"].pk, "config": _evaluation(metrics=["bleu", "perplexity"])},
            "bleu needs a dataset of schema instruction or chat; ",
        ),
        ({"config": _evaluation(metrics=["perplexity"])}, "perplexity needs a dataset of schema text"),
        ({"config": _evaluation(metrics=["multiple_choice", "rouge"])}, "rouge needs a dataset of schema"),
        (
            {
                "dataset_version": data["text"].pk,
                "config": _evaluation(metrics=["perplexity"], num_fewshot=1),
            },
            "Few-shot examples",
        ),
        ({"config": _evaluation(metrics=["multiple_choice"], num_fewshot=5)}, "needs more than 5 of them"),
        (
            {
                "fewshot_dataset_version": data["instruction"].pk,
                "config": _evaluation(num_fewshot=1, metrics=["multiple_choice"]),
            },
            "must be multiple-choice",
        ),
        ({"fewshot_dataset_version": data["mc_pool"].pk}, "'num_fewshot' is 0"),
        (
            {
                "fewshot_dataset_version": data["mc_pool"].pk,
                "config": _evaluation(metrics=["multiple_choice"], num_fewshot=4),
            },
            "has 3 rows",
        ),
        ({"config": _evaluation(metrics=["accuracy"])}, "config.evaluation.metrics.0"),
        ({"config": _evaluation(metrics=[])}, "config.evaluation.metrics"),
        ({"config": {"evaluation": {}, "method": {"name": "lora"}}}, "config.method"),
        ({"config": ["multiple_choice"]}, "config: Input should be a valid dictionary"),
        ({"base_model": None}, "'source_job' (a succeeded finetune)"),
        ({"kind": "distill"}, "'kind' is one of finetune, evaluate"),
        ({"kind": ["evaluate"]}, "'kind' is one of"),
        ({"source_job": "seven"}, "source_job: must be a whole number"),
        ({"dataset_version": None}, "dataset_version: "),
        ({"priority": 101}, "priority: Input should be less than or equal to 100"),
        (
            {"config": {"evaluation": {}, "resources": {"queue": FACTORY_QUEUE, "gpus": 2}}},
            "one process on at most one GPU",
        ),
        (
            {"config": {"evaluation": {}, "resources": {"queue": FACTORY_QUEUE, "cpu_processes": 2}}},
            "one process on at most one GPU",
        ),
    ]
    for change, words in cases:
        _refused(alice, _body(data, **change), 400, words)


def test_answer_accuracy_is_launched_on_prompts_and_on_lettered_questions(api_for, data):
    gsm8k = {"metrics": ["answer_accuracy"], "answer": {"extraction": "last_number", "comparison": "numeric"}}
    body = _body(data, dataset_version=data["instruction"].pk, config=_evaluation(**gsm8k))

    response = api_for("alice").post("/api/v1/jobs", body, format="json")

    assert response.status_code == 201, response.content
    spec = services.job_spec_build(Job.objects.get(pk=response.json()["id"]))
    assert spec.evaluation is not None and spec.evaluation.answer is not None
    assert spec.evaluation.answer.extraction == "last_number"
    # The scoring convention is stored with the job, so its results say how they were scored.
    assert Job.objects.get(pk=response.json()["id"]).config["evaluation"]["special_tokens"] == "tokenizer"
    letters = _evaluation(metrics=["answer_accuracy"], answer={"extraction": "choice_letter"})
    assert (
        api_for("alice").post("/api/v1/jobs", _body(data, config=letters), format="json").status_code == 201
    )


def test_answer_accuracy_settings_that_cannot_work_are_400s_that_store_nothing(api_for, data):
    alice = api_for("alice")
    answer = {"metrics": ["answer_accuracy"]}
    cases = [
        (
            _evaluation(**answer, answer={"extraction": "regex"}),
            "a 'pattern' is given with extraction 'regex'",
        ),
        (_evaluation(**answer, answer={"extraction": "regex", "pattern": "(a)(b)"}), "exactly one group"),
        (_evaluation(**answer, answer={"extraction": "regex", "pattern": "(a"}), "not a regular expression"),
        (
            _evaluation(**answer, answer={"extraction": "regex", "pattern": "(a)" * 100}),
            "at most 200 characters",
        ),
        (_evaluation(**answer, answer={"tolerance": 0.5}), "'tolerance' is for comparison 'numeric'"),
        (_evaluation(**answer, answer={"choice_count": 27}), "less than or equal to 26"),
        (_evaluation(metrics=["bleu"], answer={"extraction": "last_number"}), "add it to 'metrics'"),
        (_evaluation(**answer, special_tokens="bos"), "special_tokens"),
        # On questions the answer is a choice's letter, and the other metrics want other rows.
        (_evaluation(**answer), "set 'answer.extraction' to choice_letter"),
        (
            _evaluation(
                metrics=["answer_accuracy", "multiple_choice"], answer={"extraction": "choice_letter"}
            ),
            "computed alone",
        ),
    ]
    for config, words in cases:
        _refused(alice, _body(data, config=config), 400, words)
    text = _evaluation(**answer)
    _refused(alice, _body(data, dataset_version=data["text"].pk, config=text), 400, "answer_accuracy needs")


def test_what_to_evaluate_must_be_a_succeeded_finetune_of_the_project(api_for, data, finetune, people):
    alice = api_for("alice")
    running = job_make(people["demo"], people["alice"])
    evaluation = services.evaluate_job_create(
        project=people["demo"], user=people["alice"], base_model_id=data["base"].pk,
        dataset_version_id=data["mc"].pk, config=EvaluateConfig.model_validate(MC),
    )  # fmt: skip
    no_adapter = _succeed(job_make(people["demo"], people["alice"]), {"log": "runs:/x/logs/attempt-1.log"})
    other_base = base_model_make(people["demo"])

    _refused(alice, _body(data, source_job=running.pk), 409, f"Job {running.pk} is queued")
    _refused(alice, _body(data, source_job=no_adapter.pk), 409, "produced no adapter or model")
    _refused(alice, _body(data, source_job=evaluation.pk), 400, "is an evaluation")
    _refused(
        alice, _body(data, source_job=finetune.pk, base_model=other_base.pk), 400, "leave 'base_model' out"
    )
    _refused(alice, _body(data, source_job=999_999), 404, "No job 999999")
    _refused(alice, _body(data, dataset_version=data["elsewhere"].pk), 404, "No dataset version")
    _refused(alice, _body(data, base_model=999_999), 404, "No base model")
    # A finetune takes none of an evaluation's fields.
    finetune_body = {
        "project": "demo",
        "base_model": data["base"].pk,
        "dataset_version": data["instruction"].pk,
    }
    refused_with_source = finetune_body | {"source_job": finetune.pk}
    _refused(alice, refused_with_source, 400, "source_job: Extra inputs are not permitted")


def test_charlie_the_outsider_gets_404s(api_for, data, finetune, people):
    charlie = api_for("charlie")
    evaluation = services.evaluate_job_create(
        project=people["demo"], user=people["alice"], base_model_id=data["base"].pk,
        dataset_version_id=data["mc"].pk, config=EvaluateConfig.model_validate(MC),
    )  # fmt: skip

    _refused(charlie, _body(data), 404, "")
    # From his own project, demo's rows are not there.
    _refused(charlie, _body(data, project="other"), 404, "No base model")
    _refused(charlie, _body(data, project="other", base_model=None, source_job=finetune.pk), 404, "No job")
    assert charlie.get(f"/api/v1/jobs/{evaluation.pk}").status_code == 404
    assert charlie.post(f"/api/v1/jobs/{evaluation.pk}/cancel").status_code == 404
    assert charlie.post(f"/api/v1/jobs/{evaluation.pk}/clone").status_code == 404
    web = Client()
    web.login(username="charlie", password=PASSWORD)
    assert web.get("/p/demo/jobs/evaluate").status_code == 404
    assert web.get(f"/jobs/{evaluation.pk}/").status_code == 404


def test_an_evaluate_job_goes_through_claim_finish_retry_and_clone_like_a_finetune(api_for, data, people):
    alice = api_for("alice")
    job = Job.objects.get(pk=alice.post("/api/v1/jobs", _body(data), format="json").json()["id"])

    claimed = services.job_claim(job_id=job.pk, attempt=1, worker="w")
    assert claimed.kind is JobKind.EVALUATE
    failed = JobResult(
        attempt=1, worker="w", outcome=JobOutcome.FAILED, error="lost the host", retryable=False
    )
    services.job_finish(job_id=job.pk, result=failed)
    retried = alice.post(f"/api/v1/jobs/{job.pk}/retry").json()
    assert (retried["status"], retried["attempt"], retried["kind"]) == ("queued", 2, "evaluate")
    assert services.job_claim(job_id=job.pk, attempt=2, worker="w").kind is JobKind.EVALUATE
    metrics = {"mc_acc": 0.6, "mc_acc_norm": 0.4}
    done = JobResult(attempt=2, worker="w", outcome=JobOutcome.SUCCEEDED, metrics=metrics)
    assert services.job_finish(job_id=job.pk, result=done).status == JobStatus.SUCCEEDED
    assert alice.get(f"/api/v1/jobs/{job.pk}").json()["metrics"] == metrics

    clone = alice.post(f"/api/v1/jobs/{job.pk}/clone").json()
    assert (clone["kind"], clone["dataset_version"], clone["config"]) == (
        "evaluate",
        data["mc"].pk,
        job.config,
    )
    assert alice.post(f"/api/v1/jobs/{clone['id']}/cancel").json()["status"] == "cancelled"


def test_an_evaluate_job_is_never_registered_as_a_model_version(api_for, data):
    alice = api_for("alice")
    job = Job.objects.get(pk=alice.post("/api/v1/jobs", _body(data), format="json").json()["id"])
    _succeed(job, {})

    response = alice.post("/api/v1/model-versions", {"job": job.pk, "name": "tiny"}, format="json")

    assert response.status_code == 409
    assert "is an evaluation and trained no model" in response.json()["message"]


def test_the_job_page_shows_an_evaluations_metrics_and_no_loss_chart_or_register_form(data, people):
    job = services.evaluate_job_create(
        project=people["demo"], user=people["alice"], base_model_id=data["base"].pk,
        dataset_version_id=data["mc"].pk, config=EvaluateConfig.model_validate(MC),
    )  # fmt: skip
    services.job_claim(job_id=job.pk, attempt=1, worker="w")
    services.job_finish(
        job_id=job.pk,
        result=JobResult(attempt=1, worker="w", outcome=JobOutcome.SUCCEEDED, metrics={"mc_acc": 0.8}),
    )
    web = Client()
    web.login(username="alice", password=PASSWORD)

    page = web.get(f"/jobs/{job.pk}/").content.decode()

    assert 'id="evaluation-metrics"' in page and "<code>mc_acc</code></td><td>0.8000" in page
    assert "loss-chart" not in page and "Register as a model version" not in page
    assert "step 0 / 0" not in page
    assert "multiple_choice" in page


def test_the_evaluate_page_launches_a_job_and_says_why_it_refuses_one(data, finetune):
    web = Client()
    web.login(username="alice", password=PASSWORD)
    form = {
        "source_job": finetune.pk,
        "dataset_version": data["mc"].pk,
        "metrics": ["multiple_choice"],
        "num_fewshot": 0,
        "batch_size": 8,
        "max_new_tokens": 64,
        "gpus": 0,
        "queue": FACTORY_QUEUE,
        "priority": 0,
    }
    shown = web.get(f"/p/demo/jobs/evaluate?source_job={finetune.pk}").content.decode()
    assert f'<option value="{finetune.pk}" selected>' in shown

    before = Job.objects.count()
    refused = web.post("/p/demo/jobs/evaluate", form | {"dataset_version": data["text"].pk})
    assert refused.status_code == 200
    assert "multiple_choice needs a dataset of schema multiple_choice" in refused.content.decode()
    assert Job.objects.count() == before

    launched = web.post("/p/demo/jobs/evaluate", form)
    job = Job.objects.get(kind=JobKind.EVALUATE)
    assert launched.status_code == 302 and launched["Location"] == f"/jobs/{job.pk}/"
    assert job.source_job == finetune and job.base_model == finetune.base_model
    assert job.queue == FACTORY_QUEUE


def test_the_evaluated_version_named_as_its_own_few_shot_pool_leaves_each_question_out(api_for, data):
    body = _body(data, fewshot_dataset_version=data["mc"].pk)
    body["config"] = {**MC, "evaluation": {"metrics": ["multiple_choice"], "num_fewshot": 2}}

    response = api_for("alice").post("/api/v1/jobs", body, format="json")

    assert response.status_code == 201, response.content
    job = Job.objects.get(pk=response.json()["id"])
    # No separate pool: the worker then draws from the evaluated rows without the question's own.
    assert job.fewshot_dataset_version is None
    assert services.job_spec_build(job).fewshot_dataset_uri is None


def test_a_finetune_that_merged_its_adapter_is_evaluated_as_the_merged_model(api_for, data, people):
    merged = _succeed(
        job_make(people["demo"], people["alice"]),
        {"adapter": "runs:/abc/adapter", "model": "runs:/abc/model"},
    )
    body = _body(data, source_job=merged.pk)
    body.pop("base_model")

    response = api_for("alice").post("/api/v1/jobs", body, format="json")

    assert response.status_code == 201, response.content
    artifact = services.job_spec_build(Job.objects.get(pk=response.json()["id"])).trained_artifact
    assert artifact is not None
    assert (artifact.kind, artifact.uri) == (TrainedArtifactKind.MODEL, "runs:/abc/model")
