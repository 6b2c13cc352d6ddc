"""Evaluation suites: their versions, their runs as evaluate jobs, and the cache of results.

A suite version is immutable: an edit writes the next version, and its ``digest`` (SHA-256 of the
canonical JSON of its tasks and seed) names exactly what a result was computed on. A suite run is
one model version's run of one suite version: one evaluate job per task, queued together so they
run in parallel, settled by ``job_finished`` when the last one ends. At most one run per (suite
version, model version) is live (running or succeeded): that is the cache.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    StringConstraints,
    Tag,
    model_validator,
)

from controlplane import tracking
from controlplane.accounts.models import Project, Role, User
from controlplane.accounts.selectors import project_role_check
from controlplane.datasets.models import DatasetVersion
from controlplane.errors import (
    Conflict,
    DomainError,
    NotFound,
    ValidationFailed,
    pydantic_parse,
)
from controlplane.evidence.digests import digest_of
from controlplane.evidence.models import Suite, SuiteRun, SuiteRunJob, SuiteRunStatus
from controlplane.naming import name_check
from controlplane.registry.models import Deployment, ModelVersion, Promotion, PromotionStatus
from controlplane.training.models import BaseModel as TrainingBaseModel
from controlplane.training.models import Job, JobStatus
from controlplane.training.services import judging
from controlplane.training.services.evaluations import _evaluation_fits, evaluate_job_create
from workers.spec import EvaluateConfig, EvaluationConfig, Resources

log = logging.getLogger(__name__)

MAX_TASKS = 20
TaskName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,99}$")]
Id = Annotated[int, Field(ge=1, le=2**63 - 1, strict=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EvaluationTask(_Strict):
    """Score the model on a dataset version's rows with an ``EvaluationConfig``."""

    name: TaskName
    dataset_version: Id
    evaluation: EvaluationConfig
    fewshot_dataset_version: Id | None = None
    # Where it runs (a GPU, a queue); the suite's seed overrides the evaluation's own.
    resources: Resources = Field(default_factory=Resources)

    @property
    def judged(self) -> bool:
        return False


class JudgeModel(_Strict):
    """The judge: one of the project's base models, or a registered model version (its job's model)."""

    base_model: Id | None = None
    model_version: Id | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> JudgeModel:
        if (self.base_model is None) == (self.model_version is None):
            raise ValueError("name the judge by exactly one of 'base_model' or 'model_version'")
        return self


class JudgeTask(_Strict):
    """Compare the challenger's and the champion's answers to a generation task with a judge model."""

    name: TaskName
    judge: JudgeModel
    rubric: Annotated[str, StringConstraints(min_length=1, max_length=4000, strip_whitespace=True)]
    of_task: TaskName

    @property
    def judged(self) -> bool:
        return True


def _task_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "judge" if "judge" in value else "evaluate"
    return "judge" if isinstance(value, JudgeTask) else "evaluate"


Task = Annotated[
    Annotated[EvaluationTask, Tag("evaluate")] | Annotated[JudgeTask, Tag("judge")],
    Discriminator(_task_kind),
]


class SuiteTasks(RootModel[list[Task]]):
    """A suite's tasks: 1 to 20, names unique, each judge task judging a generation task before it."""

    root: list[Task] = Field(min_length=1, max_length=MAX_TASKS)

    @model_validator(mode="after")
    def _names_fit(self) -> SuiteTasks:
        seen: dict[str, EvaluationTask | JudgeTask] = {}
        for task in self.root:
            if task.name in seen:
                raise ValueError(f"task {task.name!r} is named twice")
            if isinstance(task, JudgeTask):
                judged = seen.get(task.of_task)
                if not isinstance(judged, EvaluationTask):
                    raise ValueError(
                        f"judge task {task.name!r} judges {task.of_task!r}, which is not an evaluation "
                        "task listed before it"
                    )
                if not judged.evaluation.generates:
                    raise ValueError(
                        f"judge task {task.name!r} judges {task.of_task!r}, which generates no answers"
                    )
            seen[task.name] = task
        return self

    def evaluations(self) -> list[EvaluationTask]:
        return [task for task in self.root if isinstance(task, EvaluationTask)]


class SuiteBody(_Strict):
    """What a suite version is made of (the part its digest covers)."""

    tasks: SuiteTasks
    seed: int = Field(default=1234, ge=0, le=2**32 - 1)


def suite_tasks(suite: Suite) -> SuiteTasks:
    return SuiteTasks.model_validate(suite.tasks)


# --- suites ---------------------------------------------------------------------------------------


def _tasks_check(*, project: Project, tasks: Any, seed: Any) -> SuiteBody:
    """The tasks as stored, once they parse and fit the project's data: each dataset version is the
    project's, each metric fits its schema (training's rule), each judge exists."""
    body = pydantic_parse(SuiteBody, {"tasks": tasks, "seed": seed})
    for task in body.tasks.root:
        if isinstance(task, JudgeTask):
            judge = task.judge
            if (
                judge.base_model is not None
                and not TrainingBaseModel.objects.filter(pk=judge.base_model, project=project).exists()
            ):
                raise ValidationFailed(
                    f"Task {task.name}: no base model {judge.base_model} in {project.slug}."
                )
            if (
                judge.model_version is not None
                and not ModelVersion.objects.filter(pk=judge.model_version, project=project).exists()
            ):
                raise ValidationFailed(
                    f"Task {task.name}: no model version {judge.model_version} in {project.slug}."
                )
            continue
        versions = {
            v.pk: v
            for v in DatasetVersion.objects.select_related("dataset").filter(
                dataset__project=project, pk__in=[task.dataset_version, task.fewshot_dataset_version or 0]
            )
        }
        dataset = versions.get(task.dataset_version)
        if dataset is None:
            raise ValidationFailed(
                f"Task {task.name}: no dataset version {task.dataset_version} in {project.slug}."
            )
        fewshot = None
        if task.fewshot_dataset_version is not None and task.fewshot_dataset_version != dataset.pk:
            fewshot = versions.get(task.fewshot_dataset_version)
            if fewshot is None:
                raise ValidationFailed(
                    f"Task {task.name}: no dataset version {task.fewshot_dataset_version} in {project.slug}."
                )
        try:
            _evaluation_fits(
                EvaluateConfig(evaluation=task.evaluation, resources=task.resources), dataset, fewshot
            )
        except ValidationFailed as exc:
            raise ValidationFailed(f"Task {task.name}: {exc.message}") from exc
    return body


def _suite_write(
    *, project: Project, user: User, model_name: str, name: str, body: SuiteBody, version: int
) -> Suite:
    tasks = body.tasks.model_dump(mode="json")
    try:
        with transaction.atomic():
            return Suite.objects.create(
                project=project,
                model_name=model_name,
                name=name,
                version=version,
                tasks=tasks,
                seed=body.seed,
                digest=digest_of({"tasks": tasks, "seed": body.seed}),
                created_by=user,
            )
    except IntegrityError as exc:
        raise Conflict(
            f"Suite {name} v{version} was written by someone else a moment ago; reload it."
        ) from exc


def suite_create(
    *, project: Project, user: User, model_name: str, name: str, tasks: Any, seed: Any = 1234
) -> Suite:
    """The first version of suite ``name`` for registered model ``model_name``."""
    project_role_check(user=user, project=project, role=Role.MEMBER)
    name_check(name, what="suite")
    if not ModelVersion.objects.filter(project=project, name=model_name).exists():
        raise ValidationFailed(
            f"No registered model {model_name!r} in {project.slug}: register a version first."
        )
    if Suite.objects.filter(project=project, model_name=model_name, name=name).exists():
        raise Conflict(f"{model_name} has a suite {name} already: write its next version instead.")
    body = _tasks_check(project=project, tasks=tasks, seed=seed)
    return _suite_write(project=project, user=user, model_name=model_name, name=name, body=body, version=1)


def suite_version_create(*, suite: Suite, user: User, tasks: Any, seed: Any = None) -> Suite:
    """The next version of ``suite`` (versions are never changed in place); the seed stays unless given."""
    project_role_check(user=user, project=suite.project, role=Role.MEMBER)
    body = _tasks_check(project=suite.project, tasks=tasks, seed=suite.seed if seed is None else seed)
    latest = suite_current(project=suite.project, model_name=suite.model_name, name=suite.name)
    assert latest is not None
    if digest_of({"tasks": body.tasks.model_dump(mode="json"), "seed": body.seed}) == latest.digest:
        raise ValidationFailed(f"This is {latest} exactly: change a task or the seed to write a new version.")
    return _suite_write(
        project=suite.project,
        user=user,
        model_name=suite.model_name,
        name=suite.name,
        body=body,
        version=latest.version + 1,
    )


def suite_get(*, user: User, suite_id: int) -> Suite:
    suite = Suite.objects.select_related("project", "created_by").filter(pk=suite_id).first()
    if suite is None:
        raise NotFound("Not found.")
    project_role_check(user=user, project=suite.project, role=Role.VIEWER)
    return suite


def suite_list(*, project: Project, model_name: str | None = None) -> QuerySet[Suite]:
    suites = Suite.objects.filter(project=project).select_related("project", "created_by")
    return suites.filter(model_name=model_name) if model_name else suites


def suite_current(*, project: Project, model_name: str, name: str) -> Suite | None:
    return (
        Suite.objects.filter(project=project, model_name=model_name, name=name)
        .select_related("project")
        .order_by("-version")
        .first()
    )


def suites_current(*, project: Project, model_name: str) -> list[Suite]:
    """The latest version of each suite of the model, by name."""
    latest: dict[str, Suite] = {}
    for suite in Suite.objects.filter(project=project, model_name=model_name).order_by("name", "-version"):
        latest.setdefault(suite.name, suite)
    return list(latest.values())


# --- suite runs -----------------------------------------------------------------------------------


def live_run(suite: Suite, model_version: ModelVersion) -> SuiteRun | None:
    return (
        SuiteRun.objects.filter(suite=suite, model_version=model_version)
        .exclude(status=SuiteRunStatus.FAILED)
        .first()
    )


def suite_run_request(*, suite: Suite, model_version: ModelVersion, user: User) -> tuple[SuiteRun, bool]:
    """The run of ``suite`` on ``model_version``: the cached one (running or succeeded; no job starts),
    or a new one whose evaluate jobs, one per task, are queued together. True when new."""
    project_role_check(user=user, project=suite.project, role=Role.MEMBER)
    if model_version.project_id != suite.project_id or model_version.name != suite.model_name:
        raise ValidationFailed(f"Suite {suite.name} is for model {suite.model_name}, not {model_version}.")
    cached = live_run(suite, model_version)
    if cached is not None:
        return cached, False
    tasks = suite_tasks(suite)
    try:
        # One transaction: the run and all its jobs, or none. A second request racing this one
        # waits on the unique index of live runs and then finds this run (below).
        with transaction.atomic():
            run = SuiteRun.objects.create(suite=suite, model_version=model_version, created_by=user)
            for task in tasks.evaluations():
                evaluation = task.evaluation.model_copy(update={"seed": suite.seed})
                job = evaluate_job_create(
                    project=suite.project,
                    user=user,
                    dataset_version_id=task.dataset_version,
                    source_job_id=model_version.job_id,
                    fewshot_dataset_version_id=task.fewshot_dataset_version,
                    config=EvaluateConfig(evaluation=evaluation, resources=task.resources),
                    name=f"suite {suite.name} v{suite.version} · {task.name} · {model_version}",
                )
                SuiteRunJob.objects.create(run=run, task=task.name, job=job)
    except IntegrityError:
        cached = live_run(suite, model_version)
        if cached is None:
            raise
        return cached, False
    return run, True


def suite_run_get(*, user: User, suite_run_id: int) -> SuiteRun:
    run = (
        SuiteRun.objects.select_related("suite__project", "model_version", "created_by")
        .filter(pk=suite_run_id)
        .first()
    )
    if run is None:
        raise NotFound("Not found.")
    project_role_check(user=user, project=run.suite.project, role=Role.VIEWER)
    return run


def suite_run_list(*, model_version: ModelVersion) -> QuerySet[SuiteRun]:
    return SuiteRun.objects.filter(model_version=model_version).select_related(
        "suite__project", "model_version", "created_by"
    )


def job_finished(job_id: int) -> None:
    """A job ended: if it ran a suite task, settle its suite run (idempotent; reconcilers call again),
    and start the judge tasks whose two sides' answers are now both there."""
    link = SuiteRunJob.objects.filter(job_id=job_id).select_related("run__suite", "job").first()
    if link is None:
        return
    suite_run_settle(suite_run_id=link.run_id)
    if link.job.status == JobStatus.SUCCEEDED and not link.job.is_judge:
        judges_start(suite=link.run.suite)


def suite_run_settle(*, suite_run_id: int) -> SuiteRunStatus:
    """Settle a running suite run once its jobs allow: FAILED at the first job that did not
    succeed, SUCCEEDED with every task's metrics once all did. Safe to call at any time and twice:
    only the conditional update from RUNNING writes."""
    run = SuiteRun.objects.select_related("suite").get(pk=suite_run_id)
    if run.status != SuiteRunStatus.RUNNING:
        return SuiteRunStatus(run.status)
    # Judge jobs join a run later (once the champion's answers are there too) and report on their
    # own: the run settles on its evaluation tasks.
    links = [link for link in run.task_jobs.select_related("job").order_by("task") if not link.job.is_judge]
    for link in links:
        if link.job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            reason = f"task {link.task}: job {link.job_id} {link.job.status}"
            if link.job.error:
                reason += f": {link.job.error[:500]}"
            won = SuiteRun.objects.filter(pk=run.pk, status=SuiteRunStatus.RUNNING).update(
                status=SuiteRunStatus.FAILED, error=reason, finished_at=timezone.now()
            )
            return SuiteRunStatus.FAILED if won else SuiteRunStatus(SuiteRun.objects.get(pk=run.pk).status)
    if any(link.job.status != JobStatus.SUCCEEDED for link in links):
        return SuiteRunStatus.RUNNING
    results = {link.task: link.job.metrics for link in links}
    digest = digest_of(
        {
            "suite": run.suite.digest,
            "model_version": run.model_version_id,
            "jobs": {link.task: link.job_id for link in links},
            "results": results,
        }
    )
    won = SuiteRun.objects.filter(pk=run.pk, status=SuiteRunStatus.RUNNING).update(
        status=SuiteRunStatus.SUCCEEDED, results=results, digest=digest, finished_at=timezone.now()
    )
    return SuiteRunStatus.SUCCEEDED if won else SuiteRunStatus(SuiteRun.objects.get(pk=run.pk).status)


def judges_start(*, suite: Suite) -> list[Job]:
    """Start each judge task of ``suite`` for every open request of its model whose challenger and
    champion both answered the judged task: the judge compares the two answers row by row (the
    challenger's as A). The judge job joins the challenger's run under the judge task's name.
    A judge that cannot start (a bound, MLflow away) is logged; the gate shows it as pending."""
    tasks = suite_tasks(suite)
    judged = [task for task in tasks.root if isinstance(task, JudgeTask)]
    if not judged:
        return []
    by_name = {task.name: task for task in tasks.evaluations()}
    promotions = Promotion.objects.filter(
        model_version__project_id=suite.project_id,
        model_version__name=suite.model_name,
        status=PromotionStatus.REQUESTED,
    ).select_related("model_version__project", "requested_by")
    started = []
    for promotion in promotions:
        champion = champion_of(promotion)
        mine = live_run(suite, promotion.model_version)
        theirs = live_run(suite, champion) if champion is not None else None
        if mine is None or theirs is None:
            continue
        for task in judged:
            try:
                job = _judge_start(promotion, task, by_name[task.of_task], mine, theirs)
            except DomainError as exc:
                log.warning("judge task %s of %s did not start: %s", task.name, mine, exc)
                continue
            if job is not None:
                started.append(job)
    return started


def _succeeded_job(run: SuiteRun, task: str) -> Job | None:
    link = SuiteRunJob.objects.filter(run=run, task=task).select_related("job").first()
    return link.job if link is not None and link.job.status == JobStatus.SUCCEEDED else None


def _judge_start(
    promotion: Promotion, task: JudgeTask, of_task: EvaluationTask, mine: SuiteRun, theirs: SuiteRun
) -> Job | None:
    if SuiteRunJob.objects.filter(run=mine, task=task.name).exists():
        return None
    ours, other = _succeeded_job(mine, of_task.name), _succeeded_job(theirs, of_task.name)
    if ours is None or other is None:
        return None
    try:
        answers = {row.get("row"): row for row in tracking.table_read(other.artifacts.get("predictions", ""))}
        rows = tracking.table_read(ours.artifacts.get("predictions", ""))
    except ValueError as exc:
        raise ValidationFailed(f"the answers of task {of_task.name} cannot be read: {exc}") from exc
    pairs = judging.judge_pairs_parse(
        [
            {
                "row": row["row"],
                "prompt": row.get("input") or "",
                "answer_a": row.get("prediction") or "",
                "answer_b": answers[row["row"]].get("prediction") or "",
            }
            for row in rows
            if isinstance(row.get("row"), int) and row["row"] in answers
        ]
    )
    judge_job = None
    if task.judge.model_version is not None:
        judge_job = ModelVersion.objects.get(pk=task.judge.model_version).job_id
    project = mine.suite.project
    # The one network call inside a transaction here (the pairs' upload): the challenger run's row
    # lock is what makes a second finished job find this judge instead of starting another.
    with transaction.atomic():
        SuiteRun.objects.select_for_update().get(pk=mine.pk)
        if SuiteRunJob.objects.filter(run=mine, task=task.name).exists():
            return None
        job = judging.judge_job_create(
            project=project,
            user=promotion.requested_by,
            dataset_version=DatasetVersion.objects.select_related("dataset").get(pk=of_task.dataset_version),
            judge_base_model_id=task.judge.base_model,
            judge_source_job_id=judge_job,
            rubric=task.rubric,
            pairs=pairs,
            name=f"suite {mine.suite.name} · {task.name} · {mine.model_version} vs {theirs.model_version}",
            resources=of_task.resources,
        )
        SuiteRunJob.objects.create(run=mine, task=task.name, job=job)
    return job


def champion_of(promotion: Promotion) -> ModelVersion | None:
    """What the promotion's target holds now for its model, unless it is the challenger itself."""
    version = promotion.model_version
    deployment = (
        Deployment.objects.filter(
            project_id=version.project_id, model_name=version.name, target=promotion.target
        )
        .select_related("model_version")
        .first()
    )
    if deployment is None or deployment.model_version_id == version.pk:
        return None
    return deployment.model_version


def promotion_suites_start(promotion_id: int) -> list[SuiteRun]:
    """Run every current suite of the model on the challenger and the target's champion (cached
    runs are reused). Called on commit of a request; a failure to start one is logged, and the gate
    shows that suite as not run until someone requests it."""
    promotion = Promotion.objects.select_related("model_version__project", "requested_by").get(
        pk=promotion_id
    )
    if promotion.status != PromotionStatus.REQUESTED:
        return []
    version = promotion.model_version
    sides = [version, *filter(None, [champion_of(promotion)])]
    runs = []
    for suite in suites_current(project=version.project, model_name=version.name):
        for side in sides:
            try:
                run, _ = suite_run_request(suite=suite, model_version=side, user=promotion.requested_by)
            except DomainError as exc:
                log.warning(
                    "suite %s on %s did not start for promotion %s: %s", suite, side, promotion_id, exc
                )
                continue
            runs.append(run)
        # Cached runs may have answered already: their judges can start now.
        judges_start(suite=suite)
    return runs


def promotion_changed(promotion_id: int, status: PromotionStatus) -> None:
    """On a request, start the suites once it commits (jobs are sent on commit anyway)."""
    if status == PromotionStatus.REQUESTED:
        transaction.on_commit(lambda: promotion_suites_start(promotion_id))
