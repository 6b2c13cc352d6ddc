"""REST endpoints of training: base models, jobs, their logs and metrics, usage; the workers' internal API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from drf_spectacular.utils import extend_schema
from pydantic import Discriminator, Field, RootModel, Tag
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.accounts.models import Role
from controlplane.accounts.requests import AuthenticatedRequest
from controlplane.accounts.selectors import project_get
from controlplane.api_common import (
    MAX_ID,
    Flag,
    Id,
    IsWorker,
    Priority,
    ProjectRequest,
    RequestModel,
    Whole,
    WorkerTokenAuthentication,
    body_parse,
    project_from_request,
    query_parse,
)
from controlplane.errors import pydantic_parse
from controlplane.training import selectors, services
from controlplane.training.models import JobKind
from workers.spec import ClaimRequest, EvaluateConfig, Heartbeat, JobResult, TrainingConfig, WorkerHeartbeat


class BaseModelSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.CharField(source="project.slug")
    name = serializers.CharField()
    uri = serializers.CharField()
    description = serializers.CharField()
    trust_remote_code = serializers.BooleanField()


class JobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.CharField(source="project.slug")
    name = serializers.CharField()
    kind = serializers.CharField()
    status = serializers.CharField()
    attempt = serializers.IntegerField()
    queue = serializers.CharField()
    base_model = serializers.IntegerField(source="base_model_id")
    dataset_version = serializers.IntegerField(source="dataset_version_id")
    source_job = serializers.IntegerField(source="source_job_id", allow_null=True)
    fewshot_dataset_version = serializers.IntegerField(source="fewshot_dataset_version_id", allow_null=True)
    config = serializers.JSONField()
    progress = serializers.FloatField()
    step = serializers.IntegerField()
    total_steps = serializers.IntegerField()
    worker = serializers.CharField()
    mlflow_experiment = serializers.CharField()
    mlflow_run_id = serializers.CharField()
    metrics = serializers.JSONField()
    artifacts = serializers.JSONField()
    error = serializers.CharField()
    gpus = serializers.IntegerField()
    priority = serializers.IntegerField()
    gpu_indices = serializers.JSONField()
    gpu_idle_minutes = serializers.IntegerField(allow_null=True)
    waiting_reason = serializers.CharField()
    checkpoint_step = serializers.IntegerField()
    checkpoint_uri = serializers.CharField()
    run_seconds = serializers.FloatField()
    gpu_hours = serializers.FloatField()
    created_by = serializers.CharField(source="created_by.username")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField()


class BaseModelRequest(ProjectRequest):
    """A base model to register: a hub id, a path on the workers, or an MLflow artifact URI."""

    name: str = Field(max_length=100)
    uri: str = Field(min_length=1, max_length=1000)
    description: str = Field(default="", max_length=10_000)
    # Only a site admin may allow a model's own code to run on the workers.
    trust_remote_code: Flag = False


class FinetuneRequest(ProjectRequest):
    """A job that trains ``base_model`` on ``dataset_version`` as ``config`` says."""

    kind: Literal["finetune"] = "finetune"
    name: str = Field(default="", max_length=200)
    base_model: Id
    dataset_version: Id
    config: TrainingConfig = Field(default_factory=TrainingConfig)
    priority: Priority = 0


class EvaluateRequest(ProjectRequest):
    """A job that scores a base model, or what a succeeded finetune (``source_job``) trained."""

    kind: Literal["evaluate"]
    name: str = Field(default="", max_length=200)
    dataset_version: Id
    base_model: Id | None = None
    source_job: Id | None = None
    fewshot_dataset_version: Id | None = None
    config: EvaluateConfig = Field(default_factory=dict, validate_default=True)
    priority: Priority = 0


def _job_kind(body: Any) -> str | None:
    # "kind" may be left out for a finetune; the union is told apart by it all the same.
    kind = body.get("kind", JobKind.FINETUNE) if isinstance(body, dict) else getattr(body, "kind", None)
    return kind if isinstance(kind, str) else None


class JobRequest(
    RootModel[
        Annotated[
            Annotated[FinetuneRequest, Tag(JobKind.FINETUNE)]
            | Annotated[EvaluateRequest, Tag(JobKind.EVALUATE)],
            Discriminator(
                _job_kind,
                custom_error_type="job_kind",
                custom_error_message="'kind' is one of finetune, evaluate",
            ),
        ]
    ]
):
    """A finetune, or with ``"kind": "evaluate"`` an evaluation (told apart by ``kind``)."""


class BaseModelListApi(APIView):
    def get(self, request: AuthenticatedRequest) -> Response:
        project = project_from_request(request)
        models = selectors.base_model_list(project=project)
        return Response({"results": BaseModelSerializer(models, many=True).data})

    @extend_schema(request=BaseModelRequest)
    def post(self, request: AuthenticatedRequest) -> Response:
        project = project_from_request(request, role=Role.MEMBER)
        body = body_parse(request, BaseModelRequest)
        model = services.base_model_create(
            project=project,
            user=request.user,
            name=body.name,
            uri=body.uri,
            description=body.description,
            trust_remote_code=body.trust_remote_code,
        )
        return Response(BaseModelSerializer(model).data, status=status.HTTP_201_CREATED)


class JobListApi(APIView):
    def get(self, request: AuthenticatedRequest) -> Response:
        project = project_from_request(request)
        jobs = selectors.job_list(project=project)[:200]
        return Response({"results": JobSerializer(jobs, many=True).data})

    @extend_schema(request=JobRequest)
    def post(self, request: AuthenticatedRequest) -> Response:
        """A finetune, or with ``"kind": "evaluate"`` an evaluation: one endpoint, since either is
        then a job like any other (listed, watched, cancelled and retried the same way)."""
        project = project_from_request(request)  # the service checks the member role
        body = body_parse(request, JobRequest).root
        if isinstance(body, EvaluateRequest):
            job = services.evaluate_job_create(
                project=project,
                user=request.user,
                dataset_version_id=body.dataset_version,
                base_model_id=body.base_model,
                source_job_id=body.source_job,
                fewshot_dataset_version_id=body.fewshot_dataset_version,
                config=body.config,
                name=body.name,
                priority=body.priority,
            )
        else:
            job = services.job_create(
                project=project,
                user=request.user,
                base_model_id=body.base_model,
                dataset_version_id=body.dataset_version,
                config=body.config,
                name=body.name,
                priority=body.priority,
            )
        return Response(JobSerializer(job).data, status=status.HTTP_201_CREATED)


class JobEstimateApi(APIView):
    """``POST jobs/estimate``: a job creation's body; answers what the job would need, launches nothing."""

    @extend_schema(request=FinetuneRequest)
    def post(self, request: AuthenticatedRequest) -> Response:
        project = project_from_request(request)
        body = body_parse(request, FinetuneRequest)  # a finetune's body, launched or not
        estimate = selectors.job_estimate(
            project=project,
            user=request.user,
            base_model_id=body.base_model,
            dataset_version_id=body.dataset_version,
            config=body.config,
        )
        return Response(estimate)


class JobDetailApi(APIView):
    def get(self, request: AuthenticatedRequest, job_id: int) -> Response:
        job = selectors.job_get(user=request.user, job_id=job_id)
        position = selectors.job_queue_position(job=job)
        estimate = selectors.job_start_estimate(job=job, position=position)
        return Response(
            JobSerializer(job).data
            | {
                "queue_position": position,
                "start_estimate_seconds": round(estimate.total_seconds()) if estimate is not None else None,
            }
        )


class ProjectDispatchApi(APIView):
    """``POST projects/<slug>/pause`` or ``/resume``: hold or release a project's queued jobs (admins)."""

    paused = True

    def post(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = project_get(user=request.user, slug=slug)
        project = services.project_dispatch_pause(project=project, user=request.user, paused=self.paused)
        by = project.dispatch_paused_by.username if project.dispatch_paused_by else None
        return Response(
            {"project": project.slug, "dispatch_paused": project.dispatch_paused, "paused_by": by}
        )


class JobCancelApi(APIView):
    def post(self, request: AuthenticatedRequest, job_id: int) -> Response:
        job = selectors.job_get(user=request.user, job_id=job_id)
        job = services.job_cancel(job=job, user=request.user)
        return Response(JobSerializer(job).data)


class JobRetryApi(APIView):
    def post(self, request: AuthenticatedRequest, job_id: int) -> Response:
        job = selectors.job_get(user=request.user, job_id=job_id)
        return Response(JobSerializer(services.job_retry(job=job, user=request.user)).data)


class JobCloneApi(APIView):
    def post(self, request: AuthenticatedRequest, job_id: int) -> Response:
        job = selectors.job_get(user=request.user, job_id=job_id)
        clone = services.job_clone(job=job, user=request.user)
        return Response(JobSerializer(clone).data, status=status.HTTP_201_CREATED)


class LogsQuery(RequestModel):
    after: Annotated[Whole, Field(ge=0, le=MAX_ID)] = 0  # the last ``next`` seen
    attempt: Id | None = None  # default: the job's current attempt


class JobLogsApi(APIView):
    """Tail and follow: ask again with ``after`` set to the last ``next`` to get only new lines."""

    def get(self, request: AuthenticatedRequest, job_id: int) -> Response:
        job = selectors.job_get(user=request.user, job_id=job_id)
        query = query_parse(request, LogsQuery)
        after = query.after
        attempt = job.attempt if query.attempt is None else query.attempt
        lines = selectors.job_log_page(job=job, attempt=attempt, after=after)
        return Response(
            {
                "attempt": attempt,
                "lines": [text for _, text in lines],
                "next": lines[-1][0] if lines else after,
                "finished": job.is_finished or attempt != job.attempt,
            }
        )


class JobMetricsApi(APIView):
    def get(self, request: AuthenticatedRequest, job_id: int) -> Response:
        job = selectors.job_get(user=request.user, job_id=job_id)
        return Response(
            {
                "status": job.status,
                "progress": job.progress,
                "series": selectors.job_metric_series(job=job),
            }
        )


# --- the internal API workers call ------------------------------------------


class _WorkerApi(APIView):
    authentication_classes = [WorkerTokenAuthentication]
    permission_classes = [IsWorker]


class JobClaimApi(_WorkerApi):
    def post(self, request: Request, job_id: int) -> Response:
        claim = pydantic_parse(ClaimRequest, request.data)
        spec = services.job_claim(job_id=job_id, attempt=claim.attempt, worker=claim.worker)
        return Response(spec.model_dump(mode="json"))


class JobHeartbeatApi(_WorkerApi):
    def post(self, request: Request, job_id: int) -> Response:
        heartbeat = pydantic_parse(Heartbeat, request.data)
        reply = services.job_heartbeat(job_id=job_id, heartbeat=heartbeat)
        return Response(reply.model_dump(mode="json"))


class JobFinishApi(_WorkerApi):
    def post(self, request: Request, job_id: int) -> Response:
        result = pydantic_parse(JobResult, request.data)
        job = services.job_finish(job_id=job_id, result=result)
        return Response({"status": job.status})


class WorkerHeartbeatApi(_WorkerApi):
    def post(self, request: Request) -> Response:
        heartbeat = pydantic_parse(WorkerHeartbeat, request.data)
        services.worker_heartbeat_record(heartbeat=heartbeat)
        return Response({"ok": True})


class WorkerListApi(APIView):
    def get(self, request: AuthenticatedRequest) -> Response:
        rows = selectors.worker_list(user=request.user)
        return Response(
            {
                "results": [
                    {
                        "name": row["worker"].name,
                        "host": row["worker"].host,
                        "online": row["online"],
                        "last_seen": row["worker"].last_seen,
                        "queues": row["worker"].queues,
                        "gpus": row["worker"].gpus,
                        "version": row["worker"].version,
                        "running_jobs": [job.pk for job in row["jobs"]],
                        "other_running_jobs": row["hidden_jobs"],
                    }
                    for row in rows
                ]
            }
        )


class UsageQuery(ProjectRequest):
    days: Annotated[Whole, Field(ge=1, le=3660)] = 30


class UsageApi(APIView):
    """Run-hours and GPU-hours per person in a project, over the last ``days`` days (default 30)."""

    def get(self, request: AuthenticatedRequest) -> Response:
        project = project_from_request(request)
        days = query_parse(request, UsageQuery).days
        rows = selectors.usage_by_user(project=project, days=days)
        total = {key: round(sum(row[key] for row in rows), 4) for key in ("jobs", "run_hours", "gpu_hours")}
        return Response({"project": project.slug, "days": days, "by_user": rows, "total": total})
