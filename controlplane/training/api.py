"""REST endpoints of training: base models, jobs, their logs and metrics, usage; the workers' internal API."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from django.http import QueryDict
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from pydantic import Discriminator, Field, RootModel, Tag, field_validator
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.accounts.api import ERRORS, ErrorSerializer, results_of
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
from controlplane.errors import ValidationFailed, pydantic_parse
from controlplane.paging import PARAMETERS as PAGE
from controlplane.paging import page_answer
from controlplane.training import credentials, selectors, services, waiting
from controlplane.training.models import Job, JobKind, JobStatus
from controlplane.training.selectors import RUNS_PAGE_DEFAULT, RUNS_PAGE_MAX, JobFilters, JobOrder, ValueRange
from workers.spec import (
    ClaimRequest,
    EvaluateConfig,
    Heartbeat,
    HeartbeatReply,
    JobResult,
    JobSpec,
    TrainingConfig,
    WorkerHeartbeat,
)


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
    notes = serializers.CharField()
    tags = serializers.SerializerMethodField()

    def get_tags(self, job: Job) -> list[str]:
        if self.context.get("new_job"):
            return []  # a job this request created has none yet: no query for them
        # Prefetched by job_search for a listing; one query for a single job.
        return sorted(tag.name for tag in job.tags.all())


class JobCreatedSerializer(JobSerializer):
    warnings = serializers.ListField(
        child=serializers.CharField(),
        source="preflight_warnings",
        default=list,
        help_text="what to know before it runs: rows cut to max_seq_length, a queue no worker reads ...",
    )


class JobDetailSerializer(JobSerializer):
    queue_position = serializers.IntegerField(
        allow_null=True, help_text="1: next of its queue; null once claimed"
    )
    start_estimate_seconds = serializers.IntegerField(
        allow_null=True, help_text="when a queued job may start, where the running jobs say enough"
    )


class JobEstimateSerializer(serializers.Serializer):
    """What a job would need (workers.engine.estimate); null where ``notes`` says it could not be measured."""

    total_params = serializers.IntegerField(allow_null=True)
    trainable_params = serializers.IntegerField(allow_null=True)
    trainable_percent = serializers.FloatField(allow_null=True)
    gpus = serializers.IntegerField()
    memory_per_device_gib = serializers.FloatField(allow_null=True)
    memory_bytes = serializers.DictField(
        child=serializers.IntegerField(),
        allow_null=True,
        help_text="weights, gradients, optimizer, activations, overhead and total, per device",
    )
    memory_gib = serializers.DictField(child=serializers.FloatField(), allow_null=True)
    gpu_memory_gib = serializers.FloatField(allow_null=True)
    fits = serializers.BooleanField(allow_null=True)
    tokens_per_epoch = serializers.IntegerField()
    tokens_total = serializers.IntegerField()
    steps = serializers.IntegerField()
    notes = serializers.ListField(child=serializers.CharField())
    warnings = serializers.ListField(
        child=serializers.CharField(),
        help_text="what the launch would say: rows cut, a queue no worker reads ...",
    )


class MetricSeriesSerializer(serializers.Serializer):
    steps = serializers.ListField(child=serializers.IntegerField())
    values = serializers.ListField(child=serializers.FloatField())


class JobMetricsSerializer(serializers.Serializer):
    status = serializers.CharField()
    progress = serializers.FloatField()
    series = serializers.DictField(child=MetricSeriesSerializer(), help_text="each metric by its name")


class JobLogsSerializer(serializers.Serializer):
    attempt = serializers.IntegerField()
    lines = serializers.ListField(child=serializers.CharField())
    next = serializers.IntegerField(help_text="ask again with after=next for the lines after these")
    finished = serializers.BooleanField(help_text="no more lines will come")


class WorkerSerializer(serializers.Serializer):
    name = serializers.CharField()
    host = serializers.CharField()
    online = serializers.BooleanField()
    last_seen = serializers.DateTimeField()
    queues = serializers.ListField(child=serializers.CharField())
    gpus = serializers.ListField(
        child=serializers.DictField(),
        help_text="index, name, memory_total_mb, memory_used_mb, utilization_percent",
    )
    version = serializers.CharField()
    running_jobs = serializers.ListField(
        child=serializers.IntegerField(), help_text="those the caller may see"
    )
    other_running_jobs = serializers.IntegerField(help_text="how many others it runs")


class UsageTotalSerializer(serializers.Serializer):
    jobs = serializers.IntegerField()
    run_hours = serializers.FloatField()
    gpu_hours = serializers.FloatField()


class UsageRowSerializer(UsageTotalSerializer):
    user = serializers.CharField()


class UsageSerializer(serializers.Serializer):
    project = serializers.CharField()
    days = serializers.IntegerField()
    by_user = UsageRowSerializer(many=True)
    total = UsageTotalSerializer()


class BaseModelRequest(ProjectRequest):
    """A base model to register: a hub id ``org/name[@revision]``, a ``runs:/`` or ``models:/`` URI
    of the project, or a path or storage URI under a root a site admin allowed (``MODEL_URI_ROOTS``)."""

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


PROJECT = OpenApiParameter("project", str, required=True)


class BaseModelListApi(APIView):
    @extend_schema(
        operation_id="api_v1_base_models_list",
        parameters=[PROJECT, *PAGE],
        responses={200: results_of(BaseModelSerializer), **ERRORS},
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        project = project_from_request(request)
        models = selectors.base_model_list(project=project)
        return Response(
            page_answer(
                request, models, lambda rows: BaseModelSerializer(rows, many=True).data, newest_first=False
            )
        )

    @extend_schema(
        request=BaseModelRequest, responses={201: BaseModelSerializer, **ERRORS, 409: ErrorSerializer}
    )
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


Text = Annotated[str, Field(max_length=200)]
# Repeated query parameters: ``?metric=eval_loss:0:1.5&metric=loss::2``.
REPEATED = ("metric", "param")


class JobListQuery(RequestModel):
    """The runs table's filters, sort and page, as ``GET /api/v1/jobs`` and the runs page take them."""

    project: str | None = Field(default=None, min_length=1, max_length=64)
    status: Text = ""
    kind: Text = ""
    method: Text = ""
    dataset: Id | None = None
    dataset_version: Id | None = None
    base_model: Id | None = None
    creator: Text = ""
    tag: Text = ""
    created_after: datetime | None = None
    created_before: datetime | None = None
    metric: list[Text] = Field(default_factory=list, max_length=20)
    param: list[Text] = Field(default_factory=list, max_length=20)
    q: Text = ""
    ordering: Text = "-created_at"
    cursor: Annotated[str, Field(max_length=1000)] = ""
    limit: Annotated[Whole, Field(ge=1, le=RUNS_PAGE_MAX)] = RUNS_PAGE_DEFAULT

    @classmethod
    def of(cls, params: QueryDict | Mapping[str, Any], *, drop_empty: bool = False) -> JobListQuery:
        """From query parameters; a 400 naming the first bad one. ``drop_empty``: a GET form's
        empty fields mean "any" (the page); the API takes ``?status=`` as a mistake."""
        data: dict[str, Any] = {}
        for key in params:
            values = params.getlist(key) if isinstance(params, QueryDict) else [params[key]]
            if drop_empty:
                values = [value for value in values if value != ""]
                if not values:
                    continue
            data[key] = values if key in REPEATED else values[-1]
        return pydantic_parse(cls, data)

    @field_validator("created_after", "created_before")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and timezone.is_naive(value):
            return timezone.make_aware(value)
        return value

    def filters(self) -> JobFilters:
        statuses = _choices("status", self.status, JobStatus.values)
        kinds = _choices("kind", self.kind, [kind.value for kind in JobKind])
        return JobFilters(
            status=tuple(JobStatus(status) for status in statuses),
            kind=tuple(kinds),
            method=self.method,
            dataset=self.dataset,
            dataset_version=self.dataset_version,
            base_model=self.base_model,
            creator=self.creator,
            tag=self.tag,
            created_after=self.created_after,
            created_before=self.created_before,
            metrics=tuple(_value_range("metric", text) for text in self.metric),
            params=tuple(_value_range("param", text) for text in self.param),
            q=self.q,
        )

    def order(self) -> JobOrder:
        return JobOrder.parse(self.ordering)


def _choices(field: str, text: str, allowed: list[str]) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    for value in chosen:
        if value not in allowed:
            raise ValidationFailed(f"{field}: {value[:60]!r} is not one of {', '.join(allowed)}.")
    return chosen


def _value_range(field: str, text: str) -> ValueRange:
    """``name:low:high`` (either bound may be empty) as a ValueRange; else a 400 naming ``field``."""
    parts = text.split(":")
    name = ":".join(parts[:-2])
    if len(parts) < 3 or not selectors.SUMMARY_NAME.fullmatch(name):
        raise ValidationFailed(
            f"{field}: {text[:60]!r} is not name:low:high (e.g. eval_loss:0:1.5, or loss::2)."
        )

    def bound(value: str) -> float | None:
        if value.strip() == "":
            return None
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise ValidationFailed(f"{field}: {value[:40]!r} in {text[:60]!r} is not a number.")
        return number

    low, high = bound(parts[-2]), bound(parts[-1])
    if low is not None and high is not None and low > high:
        raise ValidationFailed(f"{field}: in {text[:60]!r} the low bound is above the high bound.")
    return ValueRange(name=name, low=low, high=high)


JOB_LIST_PARAMETERS = [
    OpenApiParameter("project", str, description="a project's slug; left out: every project you are in"),
    OpenApiParameter(
        "status", str, description="comma-separated: queued, running, cancelling, succeeded, ..."
    ),
    OpenApiParameter("kind", str, description="comma-separated: finetune, evaluate, sweep-driver"),
    OpenApiParameter("method", str, description="training method: lora, qlora, full, ..."),
    OpenApiParameter("dataset", int, description="a dataset's id: any of its versions"),
    OpenApiParameter("dataset_version", int),
    OpenApiParameter("base_model", int),
    OpenApiParameter("creator", str, description="a username"),
    OpenApiParameter("tag", str),
    OpenApiParameter("created_after", str, description="ISO 8601 date or time, inclusive"),
    OpenApiParameter("created_before", str, description="ISO 8601 date or time, exclusive"),
    OpenApiParameter(
        "metric",
        str,
        many=True,
        explode=True,
        description="a final metric range, name:low:high, a bound may be empty (eval_loss:0:1.5)",
    ),
    OpenApiParameter(
        "param", str, many=True, explode=True, description="a hyperparameter's range, as metric"
    ),
    OpenApiParameter("q", str, description="in the name or the notes, any case"),
    OpenApiParameter(
        "ordering",
        str,
        description="created_at (default -created_at), name, status, run_seconds, metric.<name>, "
        "param.<name>; '-' first for descending. Sorted by a metric or parameter, jobs without it come last.",
    ),
    OpenApiParameter("cursor", str, description="the next page: take it from the answer's next"),
    OpenApiParameter("limit", int, description=f"1 to {RUNS_PAGE_MAX}; default {RUNS_PAGE_DEFAULT}"),
]


class JobListApi(APIView):
    @extend_schema(
        operation_id="api_v1_jobs_list",
        parameters=JOB_LIST_PARAMETERS,
        responses={
            200: inline_serializer(
                "JobList",
                fields={
                    "results": JobSerializer(many=True),
                    "next": serializers.URLField(
                        allow_null=True, help_text="the next page's URL; null on the last page"
                    ),
                },
            ),
            **ERRORS,
        },
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        """Every job you may see (finetunes, evaluations, sweep trials), filtered, sorted, a page at a time:
        follow ``next`` until it is null. Nothing is left out silently."""
        query = JobListQuery.of(request.query_params)
        project = project_from_request(request) if query.project is not None else None
        page = selectors.job_search(
            user=request.user,
            project=project,
            filters=query.filters(),
            order=query.order(),
            cursor=query.cursor,
            limit=query.limit,
        )
        next_url = None
        if page.next_cursor is not None:
            params = request.query_params.copy()
            params["cursor"] = page.next_cursor
            next_url = request.build_absolute_uri(f"{request.path}?{params.urlencode()}")
        return Response({"results": JobSerializer(page.jobs, many=True).data, "next": next_url})

    @extend_schema(request=JobRequest, responses={201: JobCreatedSerializer, **ERRORS, 409: ErrorSerializer})
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
        return Response(
            JobCreatedSerializer(job, context={"new_job": True}).data, status=status.HTTP_201_CREATED
        )


class JobEstimateApi(APIView):
    """``POST jobs/estimate``: a job creation's body; answers what the job would need, launches nothing."""

    @extend_schema(request=FinetuneRequest, responses={200: JobEstimateSerializer, **ERRORS})
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


class JobAnnotateRequest(RequestModel):
    """What people write on a job; a field left out is left as it is."""

    tags: list[Annotated[str, Field(max_length=64)]] | None = Field(default=None, max_length=20)
    notes: str | None = Field(default=None, max_length=10_000)


class JobDetailApi(APIView):
    @extend_schema(request=JobAnnotateRequest, responses={200: JobSerializer, **ERRORS})
    def patch(self, request: AuthenticatedRequest, job_id: int) -> Response:
        """Set a job's tags (the whole list) and notes (members of its project)."""
        job = selectors.job_get(user=request.user, job_id=job_id)
        body = body_parse(request, JobAnnotateRequest)
        job = services.job_annotate(job=job, user=request.user, tags=body.tags, notes=body.notes)
        return Response(JobSerializer(job).data)

    @extend_schema(responses={200: JobDetailSerializer, **ERRORS})
    def get(self, request: AuthenticatedRequest, job_id: int) -> Response:
        job = selectors.job_get(user=request.user, job_id=job_id)
        position = selectors.job_queue_position(job=job)
        estimate = selectors.job_start_estimate(job=job, position=position)
        return Response(
            JobSerializer(job).data
            | {
                "queue_position": position,
                "start_estimate_seconds": round(estimate.total_seconds()) if estimate is not None else None,
                # Also why no worker takes it (no online worker reads its queue): read now, never stored.
                "waiting_reason": waiting.job_waiting_reason(job=job),
            }
        )


class ProjectDispatchApi(APIView):
    """``POST projects/<slug>/pause`` or ``/resume``: hold or release a project's queued jobs (admins)."""

    paused = True

    @extend_schema(
        request=None,
        responses={
            200: inline_serializer(
                "ProjectDispatch",
                fields={
                    "project": serializers.CharField(),
                    "dispatch_paused": serializers.BooleanField(),
                    "paused_by": serializers.CharField(allow_null=True),
                },
            ),
            **ERRORS,
        },
    )
    def post(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = project_get(user=request.user, slug=slug)
        project = services.project_dispatch_pause(project=project, user=request.user, paused=self.paused)
        by = project.dispatch_paused_by.username if project.dispatch_paused_by else None
        return Response(
            {"project": project.slug, "dispatch_paused": project.dispatch_paused, "paused_by": by}
        )


class JobCancelApi(APIView):
    @extend_schema(request=None, responses={200: JobSerializer, **ERRORS, 409: ErrorSerializer})
    def post(self, request: AuthenticatedRequest, job_id: int) -> Response:
        job = selectors.job_get(user=request.user, job_id=job_id)
        job = services.job_cancel(job=job, user=request.user)
        return Response(JobSerializer(job).data)


class JobRetryApi(APIView):
    @extend_schema(request=None, responses={200: JobSerializer, **ERRORS, 409: ErrorSerializer})
    def post(self, request: AuthenticatedRequest, job_id: int) -> Response:
        job = selectors.job_get(user=request.user, job_id=job_id)
        return Response(JobSerializer(services.job_retry(job=job, user=request.user)).data)


class JobCloneApi(APIView):
    @extend_schema(request=None, responses={201: JobSerializer, **ERRORS})
    def post(self, request: AuthenticatedRequest, job_id: int) -> Response:
        job = selectors.job_get(user=request.user, job_id=job_id)
        clone = services.job_clone(job=job, user=request.user)
        return Response(JobSerializer(clone, context={"new_job": True}).data, status=status.HTTP_201_CREATED)


class LogsQuery(RequestModel):
    after: Annotated[Whole, Field(ge=0, le=MAX_ID)] = 0  # the last ``next`` seen
    attempt: Id | None = None  # default: the job's current attempt


class JobLogsApi(APIView):
    """Tail and follow: ask again with ``after`` set to the last ``next`` to get only new lines."""

    @extend_schema(
        parameters=[
            OpenApiParameter("after", int, description="the last next seen"),
            OpenApiParameter("attempt", int, description="default: the job's current attempt"),
        ],
        responses={200: JobLogsSerializer, **ERRORS},
    )
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
    @extend_schema(responses={200: JobMetricsSerializer, **ERRORS})
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
    @extend_schema(
        request=ClaimRequest,
        parameters=[
            OpenApiParameter(
                credentials.HEADER,
                str,
                OpenApiParameter.HEADER,
                response=[200],
                description="the attempt's token for the tracking server",
            )
        ],
        responses={200: JobSpec, **ERRORS, 409: ErrorSerializer},
    )
    def post(self, request: Request, job_id: int) -> Response:
        claim = pydantic_parse(ClaimRequest, request.data)
        spec = services.job_claim(job_id=job_id, attempt=claim.attempt, worker=claim.worker)
        token = credentials.tracking_token_issue(job_id=job_id, attempt=claim.attempt)
        return Response(spec.model_dump(mode="json"), headers={credentials.HEADER: token})


class JobHeartbeatApi(_WorkerApi):
    @extend_schema(request=Heartbeat, responses={200: HeartbeatReply, **ERRORS})
    def post(self, request: Request, job_id: int) -> Response:
        heartbeat = pydantic_parse(Heartbeat, request.data)
        reply = services.job_heartbeat(job_id=job_id, heartbeat=heartbeat)
        return Response(reply.model_dump(mode="json"))


class JobFinishApi(_WorkerApi):
    @extend_schema(
        request=JobResult,
        responses={
            200: inline_serializer("JobFinished", fields={"status": serializers.CharField()}),
            **ERRORS,
            409: ErrorSerializer,
        },
    )
    def post(self, request: Request, job_id: int) -> Response:
        result = pydantic_parse(JobResult, request.data)
        job = services.job_finish(job_id=job_id, result=result)
        return Response({"status": job.status})


class WorkerHeartbeatApi(_WorkerApi):
    @extend_schema(
        request=WorkerHeartbeat,
        responses={
            200: inline_serializer("WorkerHeartbeatRecorded", fields={"ok": serializers.BooleanField()}),
            400: ErrorSerializer,
            403: ErrorSerializer,
        },
    )
    def post(self, request: Request) -> Response:
        heartbeat = pydantic_parse(WorkerHeartbeat, request.data)
        services.worker_heartbeat_record(heartbeat=heartbeat)
        return Response({"ok": True})


class WorkerListApi(APIView):
    @extend_schema(
        operation_id="api_v1_workers_list", responses={200: results_of(WorkerSerializer), **ERRORS}
    )
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
                ],
                # The workers are few and all shown: one page.
                "next": None,
            }
        )


class UsageQuery(ProjectRequest):
    days: Annotated[Whole, Field(ge=1, le=3660)] = 30


class UsageApi(APIView):
    """Run-hours and GPU-hours per person in a project, over the last ``days`` days (default 30)."""

    @extend_schema(
        parameters=[PROJECT, OpenApiParameter("days", int, description="1 to 3660; default 30")],
        responses={200: UsageSerializer, **ERRORS},
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        project = project_from_request(request)
        days = query_parse(request, UsageQuery).days
        rows = selectors.usage_by_user(project=project, days=days)
        total = {key: round(sum(row[key] for row in rows), 4) for key in ("jobs", "run_hours", "gpu_hours")}
        return Response({"project": project.slug, "days": days, "by_user": rows, "total": total})
