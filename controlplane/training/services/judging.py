"""Judge jobs: a model compares a challenger's answers with a champion's, pair by pair.

A judge job is an evaluate job whose evaluated model is the judge (a base model
of the project, or what a succeeded finetune trained, e.g. a deployed version's
job) and whose input is a JSONL of ``workers.spec.JudgePair`` that this module
writes to the artifact store. It keeps ``dataset_version``: the version whose
rows the prompts came from. The worker reads each pair in both orders
(``workers.engine.evaluation.judge``); its metrics are ``judge_win_rate``,
``judge_tie_rate`` and ``judge_consistency``, and its predictions table holds
each pair's verdict.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from controlplane import tracking
from controlplane.accounts.models import Project, Role, User
from controlplane.accounts.selectors import project_role_check
from controlplane.datasets.models import DatasetVersion
from controlplane.errors import Conflict, NotFound, ValidationFailed
from controlplane.training.models import BaseModel, Job, JobKind, JobStatus
from controlplane.training.selectors import base_model_get
from controlplane.training.services.dispatch import job_insert
from workers.spec import (
    JUDGE_PAIRS_MAX,
    JudgeConfig,
    JudgeJobConfig,
    JudgePair,
    JudgeVerdict,
    Resources,
)

__all__ = ["JudgePair", "JudgeVerdict", "judge_job_create", "judge_pairs_parse", "judge_verdicts"]


def judge_pairs_parse(raw: Sequence[Mapping[str, Any]]) -> list[JudgePair]:
    """Pairs from plain dicts ({row, prompt, answer_a, answer_b}); a bad one is a ValidationFailed
    that names it, so a caller building pairs from stored answers need not know the bounds."""
    pairs = []
    for index, item in enumerate(raw[: JUDGE_PAIRS_MAX + 1]):
        try:
            pairs.append(JudgePair.model_validate(item))
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            raise ValidationFailed(f"Pair {index + 1} is not a pair: {where}: {error['msg']}.") from None
    return pairs


def judge_job_create(
    *,
    project: Project,
    user: User,
    dataset_version: DatasetVersion,
    judge_base_model_id: int | None = None,
    judge_source_job_id: int | None = None,
    rubric: str,
    pairs: Sequence[JudgePair],
    name: str = "",
    resources: Resources | None = None,
    priority: int = 0,
) -> Job:
    """Queue a job in which the judge compares each pair's ``answer_a`` (the challenger's) with its
    ``answer_b`` (the champion's), both orders. Nothing is stored, nor uploaded, unless every input
    fits: 1 to JUDGE_PAIRS_MAX pairs with distinct rows, a rubric, a judge of the project.

    Uploads the pairs to MLflow: call it outside a transaction.
    """
    project_role_check(user=user, project=project, role=Role.MEMBER)
    if dataset_version.dataset.project_id != project.pk:
        raise NotFound(f"No dataset version {dataset_version.pk} in project {project.slug}.")
    try:
        config = JudgeJobConfig(judge=JudgeConfig(rubric=rubric), resources=resources or Resources())
    except ValidationError as exc:
        error = exc.errors()[0]
        # The one field a caller types is the rubric; the rest is the judge job's own settings.
        what = "rubric" if "rubric" in error["loc"] else "settings"
        raise ValidationFailed(f"The judge's {what}: {error['msg'].removeprefix('Value error, ')}.") from None
    _pairs_fit(pairs)
    base_model, source_job = _judge_model(
        project=project, base_model_id=judge_base_model_id, source_job_id=judge_source_job_id
    )
    subject = f"job {source_job.pk}" if source_job else base_model.name
    uri = _pairs_upload(project, pairs, dataset_version)
    job = Job(
        kind=JobKind.EVALUATE,
        name=(name or f"judge {len(pairs)} pairs of {dataset_version} by {subject}")[:200],
        created_by=user,
        base_model=base_model,
        dataset_version=dataset_version,
        source_job=source_job,
        input_uri=uri,
        config=config.model_dump(mode="json"),
        priority=priority,
    )
    return job_insert(job, project=project, user=user, resources=config.resources)


def judge_verdicts(job: Job) -> dict[int, str]:
    """A succeeded judge job's verdict per evaluated row: "challenger", "champion" or "tie".

    Reads the job's predictions table from MLflow: call it outside a transaction.
    """
    if not job.is_judge:
        raise ValidationFailed(f"Job {job.pk} is not a judge job.")
    if job.status != JobStatus.SUCCEEDED:
        raise Conflict(f"Judge job {job.pk} is {job.status}; its verdicts come once it succeeds.")
    uri = job.artifacts.get("predictions", "")
    try:
        rows = tracking.table_read(uri)
    except ValueError as exc:
        raise Conflict(f"The verdicts of judge job {job.pk} cannot be read: {exc}.") from None
    verdicts = {item.value for item in JudgeVerdict}
    return {
        int(row["row"]): str(row["prediction"])
        for row in rows
        if isinstance(row.get("row"), int) and row.get("prediction") in verdicts
    }


def _pairs_fit(pairs: Sequence[JudgePair]) -> None:
    if not pairs:
        raise ValidationFailed("There are no pairs to judge.")
    if len(pairs) > JUDGE_PAIRS_MAX:
        raise ValidationFailed(f"A judge job judges at most {JUDGE_PAIRS_MAX} pairs, not {len(pairs)}.")
    seen: set[int] = set()
    for pair in pairs:
        if pair.row in seen:
            # A verdict is looked up by row: two pairs of one row would hide one of them.
            raise ValidationFailed(f"Row {pair.row} is given twice; each pair is one evaluated row.")
        seen.add(pair.row)


def _judge_model(
    *, project: Project, base_model_id: int | None, source_job_id: int | None
) -> tuple[BaseModel, Job | None]:
    """The judge: a base model of the project, or a succeeded finetune of it (on its base model)."""
    if (base_model_id is None) == (source_job_id is None):
        raise ValidationFailed(
            "Say who judges: a base model ('judge_base_model'), or a succeeded finetune ('judge_source_job')."
        )
    if base_model_id is not None:
        return base_model_get(project=project, base_model_id=base_model_id), None
    assert source_job_id is not None  # one of the two, as checked above
    job = Job.objects.select_related("base_model").filter(pk=source_job_id, project=project).first()
    if job is None:
        raise NotFound(f"No job {source_job_id} in project {project.slug}.")
    if job.kind == JobKind.EVALUATE:
        raise ValidationFailed(f"Job {job.pk} is an evaluation; a judge is a base model or a finetune.")
    if job.status != JobStatus.SUCCEEDED or job.trained_artifact is None:
        raise Conflict(f"Job {job.pk} is {job.status} with nothing trained to judge with.")
    return job.base_model, job


def _pairs_upload(project: Project, pairs: Sequence[JudgePair], dataset_version: DatasetVersion) -> str:
    """The pairs as JSONL in the project's MLflow experiments, where its workers may read them."""
    with tempfile.TemporaryDirectory(prefix="tuneyard-judge-") as tmp:
        path = Path(tmp) / "pairs.jsonl"
        path.write_text("".join(json.dumps(pair.model_dump(mode="json")) + "\n" for pair in pairs))
        return tracking.artifact_upload(
            path,
            experiment=f"tuneyard/{project.slug}/judge-inputs",
            run_name=f"judge-pairs-{dataset_version.dataset.name}-v{dataset_version.version}",
            artifact_path="pairs",
            tags={"tuneyard.project": project.slug, "tuneyard.dataset_version": str(dataset_version.pk)},
        )
