"""Reads of suite results for the pages, the gates and the model card: a promotion's challenger
and champion side by side, a task's per-row predictions, a model's results over its versions.

Once a promotion is decided, what stood at the decision is read: the suite versions and runs that
existed then (a finished run never changes), so a later edit does not rewrite what was seen.
"""

from __future__ import annotations

from typing import Any

from controlplane import tracking
from controlplane.accounts.models import Project
from controlplane.errors import Conflict, NotFound, ServiceUnavailable, ValidationFailed
from controlplane.evidence.models import Suite, SuiteRun, SuiteRunJob, SuiteRunStatus
from controlplane.evidence.suites import JudgeTask, champion_of, live_run, suite_tasks, suites_current
from controlplane.registry.models import ModelVersion, Promotion, PromotionStatus
from controlplane.training.models import Job, JobStatus


def run_for(*, suite: Suite, model_version: ModelVersion) -> SuiteRun | None:
    """The run that speaks for the pair: the live one, else the latest failed one."""
    return live_run(suite, model_version) or (
        SuiteRun.objects.filter(suite=suite, model_version=model_version).order_by("-pk").first()
    )


def _side(run: SuiteRun | None, task: str, jobs: dict[tuple[int, str], Job]) -> dict[str, Any]:
    if run is None:
        return {"state": "not run", "metrics": {}, "job": None, "run": None}
    job = jobs.get((run.pk, task))
    if run.status == SuiteRunStatus.SUCCEEDED:
        metrics = run.results.get(task, {})
        return {"state": "succeeded", "metrics": metrics, "job": job, "run": run}
    if job is None:
        return {"state": "not run", "metrics": {}, "job": None, "run": run}
    if job.status == JobStatus.SUCCEEDED:
        # Its run is not settled yet (another task runs): the task's own figures are final.
        return {"state": "succeeded", "metrics": job.metrics, "job": job, "run": run}
    if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        return {"state": "failed", "metrics": {}, "job": job, "run": run, "error": job.error}
    return {"state": "pending", "metrics": {}, "job": job, "run": run}


def promotion_runs(promotion: Promotion) -> list[tuple[Suite, SuiteRun | None, SuiteRun | None]]:
    """(suite, challenger's run, champion's run) for each suite the promotion is judged on.

    Once decided, what stood at the decision: the suite versions and runs that existed then (a
    finished run never changes), so a later edit of a suite does not rewrite what was seen.
    """
    version = promotion.model_version
    decided_at = promotion.decided_at if not PromotionStatus(promotion.status).is_open else None
    champion = promotion_champion(promotion)
    suites = Suite.objects.filter(project_id=version.project_id, model_name=version.name)
    runs = SuiteRun.objects.select_related("suite", "model_version")
    if decided_at is not None:
        suites, runs = suites.filter(created_at__lte=decided_at), runs.filter(created_at__lte=decided_at)
    latest: dict[str, Suite] = {}
    for suite in suites.order_by("name", "-version"):
        latest.setdefault(suite.name, suite)

    def pick(suite: Suite, side: ModelVersion | None) -> SuiteRun | None:
        if side is None:
            return None
        mine = list(runs.filter(suite=suite, model_version=side).order_by("-pk"))
        return next((r for r in mine if r.status != SuiteRunStatus.FAILED), mine[0] if mine else None)

    return [(suite, pick(suite, version), pick(suite, champion)) for suite in latest.values()]


def promotion_champion(promotion: Promotion) -> ModelVersion | None:
    """The version the challenger is compared with: the target's now while the request is open,
    the one it held at the decision after."""
    if PromotionStatus(promotion.status).is_open or promotion.decided_at is None:
        return champion_of(promotion)
    return _champion_at_decision(promotion)


def _champion_at_decision(promotion: Promotion) -> ModelVersion | None:
    """The version the target held when ``promotion`` was decided: the last approval before it."""
    before = (
        Promotion.objects.filter(
            model_version__project_id=promotion.model_version.project_id,
            model_version__name=promotion.model_version.name,
            target=promotion.target,
            status=PromotionStatus.APPROVED,
            decided_at__lt=promotion.decided_at,
        )
        .select_related("model_version")
        .order_by("-decided_at", "-pk")
        .first()
    )
    if before is None or before.model_version_id == promotion.model_version_id:
        return None
    return before.model_version


def judge_side(
    run: SuiteRun | None, task: str, jobs: dict[tuple[int, str], Job] | None = None
) -> dict[str, Any]:
    """A judge task's state on the challenger's run and, once judged, its metrics (win rate...)."""
    if run is None:
        return {"state": "not run", "metrics": {}, "job": None}
    if jobs is None:
        link = SuiteRunJob.objects.filter(run=run, task=task).select_related("job").first()
        job = link.job if link is not None else None
    else:
        job = jobs.get((run.pk, task))
    if job is None:
        # Started once both versions' answers to the judged task are there.
        return {"state": "waiting", "metrics": {}, "job": None}
    if job.status == JobStatus.SUCCEEDED:
        return {"state": "succeeded", "metrics": job.metrics, "job": job}
    if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        return {"state": "failed", "metrics": {}, "job": job, "error": job.error}
    return {"state": "pending", "metrics": {}, "job": job}


def _delta(challenger: Any, champion: Any) -> float | None:
    if isinstance(challenger, int | float) and isinstance(champion, int | float):
        return float(challenger) - float(champion)
    return None


def suite_comparison(*, promotion: Promotion) -> dict[str, Any] | None:
    """The challenger's and the champion's suite results for ``promotion``, task by task, with
    their state (pending while a run has not ended); None when the model has no suite.
    Rendered by ``evidence/_suite_results.html`` as ``suite_comparison``."""
    triples = promotion_runs(promotion)
    if not triples:
        return None
    run_ids = [run.pk for _, *runs in triples for run in runs if run is not None]
    jobs = {
        (link.run_id, link.task): link.job
        for link in SuiteRunJob.objects.filter(run_id__in=run_ids).select_related("job")
    }
    champion = promotion_champion(promotion)
    suites = []
    for suite, mine, theirs in triples:
        tasks = []
        for task in suite_tasks(suite).root:
            if isinstance(task, JudgeTask):
                verdict = judge_side(mine, task.name, jobs)
                tasks.append({"name": task.name, "judge": True, "of_task": task.of_task, **verdict})
                continue
            challenger, held = _side(mine, task.name, jobs), _side(theirs, task.name, jobs)
            names = sorted(set(challenger["metrics"]) | set(held["metrics"]))
            metrics = []
            for name in names:
                delta = _delta(challenger["metrics"].get(name), held["metrics"].get(name))
                gain = None if delta is None else (-delta if lower_is_better(name) else delta)
                metrics.append(
                    {
                        "name": name,
                        "challenger": challenger["metrics"].get(name),
                        "champion": held["metrics"].get(name),
                        "delta": delta,
                        "lower_is_better": lower_is_better(name),
                        "trend": "" if not gain else ("better" if gain > 0 else "worse"),
                    }
                )
            tasks.append(
                {
                    "name": task.name,
                    "judge": False,
                    "challenger": challenger,
                    "champion": held,
                    "metrics": metrics,
                }
            )
        suites.append({"suite": suite, "challenger_run": mine, "champion_run": theirs, "tasks": tasks})
    return {
        "promotion": promotion,
        "challenger": promotion.model_version,
        "champion": champion,
        "suites": suites,
        "pending": any(run is None or run.status == SuiteRunStatus.RUNNING for _, run, _ in triples),
    }


def lower_is_better(metric: str) -> bool:
    """Perplexity and losses improve downwards; every other metric Tuneyard reports improves upwards."""
    return "perplexity" in metric or "loss" in metric


# The per-row predictions of a task are read whole from the run's artifacts; a page of them is served.
PREDICTION_FILTERS = ("all", "right", "wrong")


def task_predictions(*, run: SuiteRun, task: str, only: str = "all") -> list[dict[str, Any]]:
    """The per-row inputs, predictions, extracted answers, references and scores of ``task``."""
    if only not in PREDICTION_FILTERS:
        raise ValidationFailed(f"filter: choose one of {', '.join(PREDICTION_FILTERS)}.")
    link = SuiteRunJob.objects.filter(run=run, task=task).select_related("job").first()
    if link is None:
        raise NotFound(f"Suite run {run.pk} has no task {task!r}.")
    uri = link.job.artifacts.get("predictions") if isinstance(link.job.artifacts, dict) else None
    if link.job.status != JobStatus.SUCCEEDED:
        raise Conflict(f"Task {task} is {link.job.status}: its predictions are kept once its job succeeds.")
    if not uri:
        raise NotFound(f"Job {link.job_id} kept no per-row predictions.")
    try:
        rows = tracking.table_read(uri)
    except ValueError as exc:
        raise ServiceUnavailable(f"The predictions of job {link.job_id} cannot be read: {exc}.") from exc
    shaped = [
        {
            "row": row.get("row"),
            "input": row.get("input", ""),
            "prediction": row.get("prediction", ""),
            "extracted": row.get("extracted"),
            "reference": row.get("reference", ""),
            "score": row.get("score"),
        }
        for row in rows
    ]
    if only == "right":
        return [r for r in shaped if isinstance(r["score"], int | float) and r["score"] >= 1]
    if only == "wrong":
        return [r for r in shaped if isinstance(r["score"], int | float) and r["score"] < 1]
    return shaped


def suite_results_by_version(*, project: Project, model_name: str) -> list[dict[str, Any]]:
    """Each current suite's succeeded results across the model's versions, oldest version first:
    ``[{"suite", "series": [{"task", "metric", "versions": [...], "values": [...]}]}]``, drawn on the
    model's page (``evidence/model.html`` with ``pages/model.js``)."""
    charts = []
    for suite in suites_current(project=project, model_name=model_name):
        runs = (
            SuiteRun.objects.filter(suite=suite, status=SuiteRunStatus.SUCCEEDED)
            .select_related("model_version")
            .order_by("model_version__version")
        )
        series: dict[tuple[str, str], dict[str, Any]] = {}
        for run in runs:
            for task, metrics in run.results.items():
                for metric, value in (metrics or {}).items():
                    if not isinstance(value, int | float):
                        continue
                    line = series.setdefault(
                        (task, metric), {"task": task, "metric": metric, "versions": [], "values": []}
                    )
                    line["versions"].append(run.model_version.version)
                    line["values"].append(value)
        if series:
            charts.append({"suite": f"{suite.name} v{suite.version}", "series": list(series.values())})
    return charts
