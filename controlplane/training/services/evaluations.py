"""Launching evaluate jobs: what a dataset's schema lets each metric score, and few-shot pools."""

from __future__ import annotations

from controlplane.accounts.models import Project, Role, User
from controlplane.accounts.selectors import project_role_check
from controlplane.datasets.models import DatasetVersion
from controlplane.errors import Conflict, NotFound, ValidationFailed
from controlplane.training.models import Job, JobKind, JobStatus
from controlplane.training.selectors import base_model_get, dataset_version_get
from controlplane.training.services.dispatch import job_insert
from workers.spec import AnswerExtraction, DatasetSchema, EvaluateConfig, EvaluationMetric

# Which dataset schemas each metric can score. Generation metrics need a prompt
# and its reference answer; perplexity needs rows that read as text;
# multiple-choice accuracy needs the choices apart. Answer accuracy reads the
# answer out of a generation: a prompt's reference answer, or a question's
# choice letter (the question is asked with its choices lettered A, B, C...).
_GENERATION_METRICS = (EvaluationMetric.BLEU, EvaluationMetric.ROUGE, EvaluationMetric.EXACT_MATCH)
_METRIC_SCHEMAS: dict[EvaluationMetric, tuple[DatasetSchema, ...]] = {
    EvaluationMetric.PERPLEXITY: (
        DatasetSchema.TEXT,
        DatasetSchema.INSTRUCTION,
        DatasetSchema.CHAT,
        DatasetSchema.PREFERENCE,
    ),
    **dict.fromkeys(_GENERATION_METRICS, (DatasetSchema.INSTRUCTION, DatasetSchema.CHAT)),
    EvaluationMetric.MULTIPLE_CHOICE: (DatasetSchema.MULTIPLE_CHOICE,),
    EvaluationMetric.ANSWER_ACCURACY: (
        DatasetSchema.INSTRUCTION,
        DatasetSchema.CHAT,
        DatasetSchema.MULTIPLE_CHOICE,
    ),
}


def evaluate_job_create(
    *,
    project: Project,
    user: User,
    dataset_version_id: int,
    base_model_id: int | None = None,
    source_job_id: int | None = None,
    fewshot_dataset_version_id: int | None = None,
    config: EvaluateConfig,
    name: str = "",
    priority: int = 0,
) -> Job:
    """Queue a job that scores a model on a dataset version: a base model as it is, or the adapter
    or model a succeeded finetune (``source_job``) trained on it. Nothing is stored unless every
    input fits: the metrics the dataset's schema allows, few-shot examples enough."""
    project_role_check(user=user, project=project, role=Role.MEMBER)
    evaluate = config
    source_job = None
    if source_job_id is not None:
        source_job = _evaluated_job(project=project, job_id=source_job_id)
        if base_model_id is not None and base_model_id != source_job.base_model_id:
            raise ValidationFailed(
                f"Job {source_job.pk} trained on base model {source_job.base_model_id}, not "
                f"{base_model_id}: leave 'base_model' out to evaluate it on its own base model."
            )
        base_model = source_job.base_model
    elif base_model_id is not None:
        base_model = base_model_get(project=project, base_model_id=base_model_id)
    else:
        raise ValidationFailed("Say what to evaluate: 'base_model', or 'source_job' (a succeeded finetune).")
    dataset_version = dataset_version_get(project=project, dataset_version_id=dataset_version_id)
    fewshot_version = None
    if fewshot_dataset_version_id is not None and fewshot_dataset_version_id != dataset_version.pk:
        # The evaluated version itself is the default pool, from which each question's own
        # row is left out: named explicitly, its answers would be shown to it.
        fewshot_version = dataset_version_get(project=project, dataset_version_id=fewshot_dataset_version_id)
    _evaluation_fits(evaluate, dataset_version, fewshot_version)
    subject = f"job {source_job.pk}" if source_job else base_model.name
    job = Job(
        kind=JobKind.EVALUATE,
        name=(name or f"evaluate {subject} on {dataset_version}")[:200],
        created_by=user,
        base_model=base_model,
        dataset_version=dataset_version,
        source_job=source_job,
        fewshot_dataset_version=fewshot_version,
        config=evaluate.model_dump(mode="json"),
        priority=priority,
    )
    return job_insert(job, project=project, user=user, resources=evaluate.resources)


def _evaluated_job(*, project: Project, job_id: int) -> Job:
    """A finetune of ``project`` that succeeded with a trained adapter or model."""
    job = Job.objects.select_related("base_model").filter(pk=job_id, project=project).first()
    if job is None:
        raise NotFound(f"No job {job_id} in project {project.slug}.")
    if job.kind == JobKind.EVALUATE:
        raise ValidationFailed(f"Job {job.pk} is an evaluation; evaluate the finetune it evaluated instead.")
    if job.status != JobStatus.SUCCEEDED:
        raise Conflict(f"Job {job.pk} is {job.status}; only a succeeded finetune can be evaluated.")
    if job.trained_artifact is None:
        raise Conflict(
            f"Job {job.pk} produced no adapter or model to evaluate (a sweep's driver trains none)."
        )
    return job


def _evaluation_fits(config: EvaluateConfig, dataset: DatasetVersion, fewshot: DatasetVersion | None) -> None:
    """Refuse metrics the dataset's schema cannot give, and few-shot settings that cannot work."""
    evaluation = config.evaluation
    for metric in evaluation.metrics:
        schemas = _METRIC_SCHEMAS[metric]
        if dataset.format not in schemas:
            raise ValidationFailed(
                f"{metric.value} needs a dataset of schema {' or '.join(schemas)}; "
                f"{dataset} is {dataset.format}."
            )
    if (
        dataset.format == DatasetSchema.MULTIPLE_CHOICE
        and EvaluationMetric.ANSWER_ACCURACY in evaluation.metrics
    ):
        if evaluation.answer_config.extraction is not AnswerExtraction.CHOICE_LETTER:
            raise ValidationFailed(
                f"answer_accuracy on multiple-choice questions reads the chosen letter: set "
                f"'answer.extraction' to choice_letter ({dataset} is {dataset.format})."
            )
        if len(evaluation.metrics) > 1:
            raise ValidationFailed(
                "answer_accuracy on multiple-choice questions is computed alone: launch the other metrics "
                "as another evaluation."
            )
    choice = EvaluationMetric.MULTIPLE_CHOICE in evaluation.metrics
    if not choice:
        if evaluation.num_fewshot or fewshot is not None:
            raise ValidationFailed(
                "Few-shot examples ('num_fewshot', 'fewshot_dataset_version') are for multiple_choice."
            )
        return
    if fewshot is not None:
        if fewshot.format != DatasetSchema.MULTIPLE_CHOICE:
            raise ValidationFailed(
                f"The few-shot examples must be multiple-choice; {fewshot} is {fewshot.format}."
            )
        if evaluation.num_fewshot == 0:
            raise ValidationFailed("'fewshot_dataset_version' is given but 'num_fewshot' is 0.")
        if fewshot.row_count < evaluation.num_fewshot:
            raise ValidationFailed(
                f"{evaluation.num_fewshot}-shot needs {evaluation.num_fewshot} few-shot examples; "
                f"{fewshot} has {fewshot.row_count} rows."
            )
    elif evaluation.num_fewshot and dataset.row_count <= evaluation.num_fewshot:
        # Each question's examples are drawn from the others.
        raise ValidationFailed(
            f"{evaluation.num_fewshot}-shot from the evaluated rows needs more than "
            f"{evaluation.num_fewshot} of them; {dataset} has {dataset.row_count}."
        )
