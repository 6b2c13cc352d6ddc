"""Evaluation suites: versions, validation, runs as evaluate jobs (cached), settling, comparison."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from controlplane.errors import Conflict, Forbidden, NotFound, ValidationFailed
from controlplane.evidence import digests, suite_results, suites
from controlplane.evidence.models import Suite, SuiteRun, SuiteRunJob, SuiteRunStatus
from controlplane.registry.models import Deployment, ModelVersion, Promotion, PromotionStatus
from controlplane.training.models import Job, JobKind, JobStatus
from controlplane.training.services import job_claim, job_finish
from tests.factories import FACTORY_QUEUE, dataset_version_make, job_make, promotion_make
from workers.spec import JobOutcome, JobResult

pytestmark = pytest.mark.django_db


# --- helpers shared with the gate tests -------------------------------------------------------------


def finetune_succeeded(project, user) -> Job:
    """A finetune that succeeded with an adapter (never loaded: its evaluate jobs stay queued)."""
    job = job_make(project, user)
    job_claim(job_id=job.pk, attempt=1, worker="w1")
    job_finish(
        job_id=job.pk,
        result=JobResult(
            attempt=1, worker="w1", outcome=JobOutcome.SUCCEEDED, artifacts={"adapter": "runs:/x/a"}
        ),
    )
    job.refresh_from_db()
    return job


_versions: dict[str, int] = {}


def version_make(project, user, *, name: str = "tiny-lora") -> ModelVersion:
    """The next version of registered model ``name``, from its own succeeded finetune."""
    job = finetune_succeeded(project, user)
    _versions[name] = ModelVersion.objects.filter(project=project, name=name).count() + 1
    return ModelVersion.objects.create(
        project=project,
        name=name,
        version=_versions[name],
        job=job,
        source_uri="runs:/x/a",
        mlflow_name=f"{project.slug}.{name}",
        created_by=user,
    )


def quiz_task(project, user, name: str = "quiz", **evaluation: Any) -> dict[str, Any]:
    dataset = dataset_version_make(project, user, schema="multiple_choice", row_count=10)
    return {
        "name": name,
        "dataset_version": dataset.pk,
        "evaluation": {"metrics": ["multiple_choice"], **evaluation},
        "resources": {"queue": FACTORY_QUEUE},
    }


def suite_make(people, version: ModelVersion, *, tasks: int = 2, name: str = "core") -> Suite:
    demo, alice = people["demo"], people["alice"]
    return suites.suite_create(
        project=demo,
        user=alice,
        model_name=version.name,
        name=name,
        tasks=[quiz_task(demo, alice, f"quiz-{i}") for i in range(tasks)],
        seed=7,
    )


def job_end(job: Job, *, metrics: dict[str, float] | None = None, fail: str = "") -> None:
    """Play the worker: claim and finish ``job``, then what training's seam does on commit."""
    job_claim(job_id=job.pk, attempt=1, worker="w1")
    outcome = JobOutcome.FAILED if fail else JobOutcome.SUCCEEDED
    job_finish(
        job_id=job.pk,
        result=JobResult(
            attempt=1, worker="w1", outcome=outcome, metrics=metrics or {}, error=fail, retryable=False
        ),
    )
    suites.job_finished(job.pk)


def run_succeed(run: SuiteRun, metrics: dict[str, dict[str, float]]) -> None:
    for link in run.task_jobs.select_related("job"):
        job_end(link.job, metrics=metrics.get(link.task, {"mc_acc": 0.5}))
    run.refresh_from_db()


# --- suites -------------------------------------------------------------------------------------------


def test_a_suite_is_versioned_and_an_edit_writes_the_next_version(people):
    version = version_make(people["demo"], people["alice"])
    suite = suite_make(people, version, tasks=1)
    assert (suite.version, suite.seed, len(suite.tasks)) == (1, 7, 1)
    assert len(suite.digest) == 64

    tasks = [*suite.tasks, quiz_task(people["demo"], people["alice"], "quiz-more")]
    second = suites.suite_version_create(suite=suite, user=people["bob"], tasks=tasks)
    assert (second.name, second.version, second.seed) == ("core", 2, 7)
    assert second.digest != suite.digest
    suite.refresh_from_db()
    assert len(suite.tasks) == 1, "a version never changes"
    assert suites.suite_current(project=people["demo"], model_name=version.name, name="core") == second

    with pytest.raises(ValidationFailed, match="exactly"):
        suites.suite_version_create(suite=second, user=people["bob"], tasks=second.tasks)


def test_the_digest_is_the_canonical_json_of_tasks_and_seed(people):
    version = version_make(people["demo"], people["alice"])
    suite = suite_make(people, version, tasks=1)
    assert suite.digest == digests.digest_of({"tasks": suite.tasks, "seed": 7})
    reordered = [dict(reversed(list(task.items()))) for task in suite.tasks]
    assert digests.digest_of({"seed": 7, "tasks": reordered}) == suite.digest


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        ([], "at least 1"),
        ("not a list", "list"),
        ([{"name": "Bad Name", "dataset_version": 1, "evaluation": {}}], "tasks.0"),
        ([{"name": "a", "dataset_version": 1, "evaluation": {"metrics": ["nope"]}}], "metrics"),
        ([{"name": "a", "dataset_version": 1, "evaluation": {}, "extra": 1}], "extra"),
        (
            [{"name": "j", "judge": {"base_model": 1}, "rubric": "r", "of_task": "missing"}],
            "not an evaluation",
        ),
        ([{"name": "j", "judge": {}, "rubric": "r", "of_task": "a"}], "exactly one"),
    ],
)
def test_a_bad_suite_is_refused_with_a_message_and_nothing_is_stored(people, tasks, message):
    version = version_make(people["demo"], people["alice"])
    with pytest.raises(ValidationFailed, match=message):
        suites.suite_create(
            project=people["demo"], user=people["alice"], model_name=version.name, name="core", tasks=tasks
        )
    assert not Suite.objects.exists()


def test_more_than_twenty_tasks_are_refused(people):
    demo, alice = people["demo"], people["alice"]
    version = version_make(demo, alice)
    task = quiz_task(demo, alice)
    tasks = [{**task, "name": f"t{i}"} for i in range(21)]
    with pytest.raises(ValidationFailed, match="at most 20"):
        suites.suite_create(project=demo, user=alice, model_name=version.name, name="core", tasks=tasks)


def test_a_metric_the_dataset_schema_cannot_give_is_refused(people):
    demo, alice = people["demo"], people["alice"]
    version = version_make(demo, alice)
    text = dataset_version_make(demo, alice, schema="text")
    tasks = [{"name": "a", "dataset_version": text.pk, "evaluation": {"metrics": ["multiple_choice"]}}]
    with pytest.raises(
        ValidationFailed, match="Task a: multiple_choice needs a dataset of schema multiple_choice"
    ):
        suites.suite_create(project=demo, user=alice, model_name=version.name, name="core", tasks=tasks)


def test_another_projects_dataset_version_is_refused(people):
    version = version_make(people["demo"], people["alice"])
    theirs = quiz_task(people["other"], people["charlie"])
    with pytest.raises(ValidationFailed, match=f"no dataset version {theirs['dataset_version']} in demo"):
        suites.suite_create(
            project=people["demo"], user=people["alice"], model_name=version.name, name="core", tasks=[theirs]
        )


def test_a_suite_needs_a_registered_model_a_member_and_a_new_name(people):
    demo, alice = people["demo"], people["alice"]
    version = version_make(demo, alice)
    task = quiz_task(demo, alice)
    with pytest.raises(ValidationFailed, match="No registered model"):
        suites.suite_create(project=demo, user=alice, model_name="nothing", name="core", tasks=[task])
    with pytest.raises(Forbidden):
        suites.suite_create(
            project=demo, user=people["viv"], model_name=version.name, name="core", tasks=[task]
        )
    with pytest.raises(NotFound):
        suites.suite_create(
            project=demo, user=people["charlie"], model_name=version.name, name="core", tasks=[task]
        )
    suites.suite_create(project=demo, user=alice, model_name=version.name, name="core", tasks=[task])
    with pytest.raises(Conflict, match="next version"):
        suites.suite_create(project=demo, user=alice, model_name=version.name, name="core", tasks=[task])


def test_a_judge_task_must_judge_a_generation_task(people):
    demo, alice = people["demo"], people["alice"]
    version = version_make(demo, alice)
    judge = {
        "name": "judged",
        "judge": {"model_version": version.pk},
        "rubric": "Which is right?",
        "of_task": "quiz",
    }
    with pytest.raises(ValidationFailed, match="generates no answers"):
        suites.suite_create(
            project=demo,
            user=alice,
            model_name=version.name,
            name="core",
            tasks=[quiz_task(demo, alice), judge],
        )
    instructions = dataset_version_make(demo, alice, schema="instruction")
    answers = {
        "name": "quiz",
        "dataset_version": instructions.pk,
        "evaluation": {"metrics": ["exact_match"]},
        "resources": {"queue": FACTORY_QUEUE},
    }
    suite = suites.suite_create(
        project=demo, user=alice, model_name=version.name, name="core", tasks=[answers, judge]
    )
    assert [t.name for t in suites.suite_tasks(suite).root] == ["quiz", "judged"]
    with pytest.raises(ValidationFailed, match="no model version 999"):
        suites.suite_version_create(
            suite=suite, user=alice, tasks=[answers, {**judge, "judge": {"model_version": 999}}]
        )


# --- runs ---------------------------------------------------------------------------------------------


def test_a_run_queues_one_evaluate_job_per_task_at_once_with_the_suites_seed(people):
    version = version_make(people["demo"], people["alice"])
    suite = suite_make(people, version)
    run, created = suites.suite_run_request(suite=suite, model_version=version, user=people["bob"])
    assert created and run.status == SuiteRunStatus.RUNNING
    links = list(run.task_jobs.select_related("job"))
    assert [link.task for link in links] == ["quiz-0", "quiz-1"]
    for link in links:
        job = link.job
        assert (job.kind, job.status, job.source_job_id) == (
            JobKind.EVALUATE,
            JobStatus.QUEUED,
            version.job_id,
        )
        assert job.config["evaluation"]["seed"] == 7
        assert job.created_by == people["bob"]


def test_the_second_request_for_the_same_pair_starts_no_job(people):
    version = version_make(people["demo"], people["alice"])
    suite = suite_make(people, version)
    first, created = suites.suite_run_request(suite=suite, model_version=version, user=people["alice"])
    jobs = Job.objects.filter(kind=JobKind.EVALUATE).count()
    again, created_again = suites.suite_run_request(suite=suite, model_version=version, user=people["bob"])
    assert created and not created_again and again == first
    assert Job.objects.filter(kind=JobKind.EVALUATE).count() == jobs == 2

    run_succeed(first, {})
    cached, created_again = suites.suite_run_request(suite=suite, model_version=version, user=people["bob"])
    assert cached == first and not created_again and cached.status == SuiteRunStatus.SUCCEEDED
    assert Job.objects.filter(kind=JobKind.EVALUATE).count() == 2


def test_a_run_succeeds_with_every_tasks_metrics_once_all_its_jobs_did(people):
    version = version_make(people["demo"], people["alice"])
    suite = suite_make(people, version)
    run, _ = suites.suite_run_request(suite=suite, model_version=version, user=people["alice"])
    first, second = [link.job for link in run.task_jobs.select_related("job")]
    job_end(first, metrics={"mc_acc": 0.6})
    run.refresh_from_db()
    assert run.status == SuiteRunStatus.RUNNING and run.results == {}
    job_end(second, metrics={"mc_acc": 0.4})
    run.refresh_from_db()
    assert run.status == SuiteRunStatus.SUCCEEDED
    assert run.results == {"quiz-0": {"mc_acc": 0.6}, "quiz-1": {"mc_acc": 0.4}}
    assert len(run.digest) == 64 and run.finished_at is not None


def test_settling_is_idempotent_and_only_moves_a_running_run(people):
    version = version_make(people["demo"], people["alice"])
    suite = suite_make(people, version, tasks=1)
    run, _ = suites.suite_run_request(suite=suite, model_version=version, user=people["alice"])
    run_succeed(run, {"quiz-0": {"mc_acc": 1.0}})
    digest, finished = run.digest, run.finished_at
    # A reconciler calls again, and a stale writer tries to fail it: neither changes it.
    link = run.task_jobs.get()
    suites.job_finished(link.job_id)
    Job.objects.filter(pk=link.job_id).update(status=JobStatus.FAILED)
    assert suites.suite_run_settle(suite_run_id=run.pk) == SuiteRunStatus.SUCCEEDED
    run.refresh_from_db()
    assert (run.status, run.digest, run.finished_at) == (SuiteRunStatus.SUCCEEDED, digest, finished)


def test_a_failed_job_fails_the_run_with_its_reason_and_a_new_request_runs_again(people):
    version = version_make(people["demo"], people["alice"])
    suite = suite_make(people, version)
    run, _ = suites.suite_run_request(suite=suite, model_version=version, user=people["alice"])
    first = run.task_jobs.order_by("task").first().job
    job_end(first, fail="out of memory")
    run.refresh_from_db()
    assert run.status == SuiteRunStatus.FAILED
    assert run.error.startswith(f"task quiz-0: job {first.pk} failed") and "out of memory" in run.error
    rerun, created = suites.suite_run_request(suite=suite, model_version=version, user=people["alice"])
    assert created and rerun != run and SuiteRunJob.objects.filter(run=rerun).count() == 2


def test_a_job_of_no_suite_finishing_is_ignored(people):
    job = job_make(people["demo"], people["alice"])
    suites.job_finished(job.pk)
    assert not SuiteRun.objects.exists()


def test_a_run_is_refused_for_another_models_version_and_to_a_viewer(people):
    version = version_make(people["demo"], people["alice"])
    other = version_make(people["demo"], people["alice"], name="other-model")
    suite = suite_make(people, version)
    with pytest.raises(ValidationFailed, match="is for model tiny-lora"):
        suites.suite_run_request(suite=suite, model_version=other, user=people["alice"])
    with pytest.raises(Forbidden):
        suites.suite_run_request(suite=suite, model_version=version, user=people["viv"])
    assert not SuiteRun.objects.exists()


def test_a_request_for_promotion_runs_the_suites_on_the_challenger_and_the_champion(
    people, django_capture_on_commit_callbacks
):
    demo, alice = people["demo"], people["alice"]
    champion = version_make(demo, alice)
    challenger = version_make(demo, alice)
    suite = suite_make(people, champion)
    deploy(champion, people["carol"])
    with django_capture_on_commit_callbacks(execute=True):
        promotion = promotion_make(challenger, alice)
    runs = {run.model_version_id: run for run in SuiteRun.objects.filter(suite=suite)}
    assert set(runs) == {challenger.pk, champion.pk}
    assert Job.objects.filter(kind=JobKind.EVALUATE).count() == 4

    comparison = suite_results.suite_comparison(promotion=promotion)
    assert comparison["champion"] == champion and comparison["pending"]
    run_succeed(runs[challenger.pk], {"quiz-0": {"mc_acc": 0.7}, "quiz-1": {"mc_acc": 0.2}})
    run_succeed(runs[champion.pk], {"quiz-0": {"mc_acc": 0.5}, "quiz-1": {"mc_acc": 0.4}})
    comparison = suite_results.suite_comparison(promotion=Promotion.objects.get(pk=promotion.pk))
    assert not comparison["pending"]
    [entry] = comparison["suites"]
    deltas = {task["name"]: task["metrics"][0]["delta"] for task in entry["tasks"]}
    assert deltas == {"quiz-0": pytest.approx(0.2), "quiz-1": pytest.approx(-0.2)}


def test_the_comparison_shows_a_pending_task_while_its_job_runs(people):
    version = version_make(people["demo"], people["alice"])
    suite = suite_make(people, version)
    run, _ = suites.suite_run_request(suite=suite, model_version=version, user=people["alice"])
    job_end(run.task_jobs.order_by("task").first().job, metrics={"mc_acc": 0.9})
    promotion = promotion_make(version, people["alice"])
    [entry] = suite_results.suite_comparison(promotion=promotion)["suites"]
    states = {task["name"]: task["challenger"]["state"] for task in entry["tasks"]}
    assert states == {"quiz-0": "succeeded", "quiz-1": "pending"}
    assert entry["tasks"][0]["metrics"][0]["challenger"] == 0.9
    assert entry["tasks"][0]["champion"]["state"] == "not run"


def test_no_suite_no_comparison(people):
    version = version_make(people["demo"], people["alice"])
    assert suite_results.suite_comparison(promotion=promotion_make(version, people["alice"])) is None


def test_results_by_version_are_series_per_task_and_metric(people):
    demo, alice = people["demo"], people["alice"]
    first, second = version_make(demo, alice), version_make(demo, alice)
    suite = suite_make(people, first, tasks=1)
    for version, value in ((first, 0.25), (second, 0.75)):
        run, _ = suites.suite_run_request(suite=suite, model_version=version, user=alice)
        run_succeed(run, {"quiz-0": {"mc_acc": value}})
    [chart] = suite_results.suite_results_by_version(project=demo, model_name=first.name)
    assert chart["suite"] == "core v1"
    assert chart["series"] == [
        {"task": "quiz-0", "metric": "mc_acc", "versions": [1, 2], "values": [0.25, 0.75]}
    ]


def deploy(version: ModelVersion, approver) -> Deployment:
    """Record ``version`` as deployed to production, as an approval leaves it (no MLflow here)."""
    promotion = Promotion.objects.create(
        model_version=version,
        target="production",
        requested_by=version.created_by,
        status=PromotionStatus.APPROVED,
        decided_by=approver,
        decided_at=timezone.now(),
    )
    return Deployment.objects.create(
        project=version.project,
        model_name=version.name,
        target="production",
        model_version=version,
        promotion=promotion,
        approved_by=approver,
        approved_at=timezone.now(),
    )
