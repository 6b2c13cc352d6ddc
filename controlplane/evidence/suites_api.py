"""REST endpoints of evaluation suites and their runs: versions, cached runs, per-row predictions."""

from __future__ import annotations

from typing import Any, Literal

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from pydantic import Field
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.accounts.api import ERRORS, ErrorSerializer, results_of
from controlplane.accounts.requests import AuthenticatedRequest
from controlplane.api_common import (
    Id,
    ProjectRequest,
    RequestModel,
    body_parse,
    project_from_request,
    query_parse,
)
from controlplane.errors import ValidationFailed
from controlplane.evidence import suite_results, suites
from controlplane.evidence.models import Suite, SuiteRun
from controlplane.paging import DEFAULT_LIMIT, MAX_LIMIT, page_answer
from controlplane.paging import PARAMETERS as PAGE
from controlplane.registry.selectors import model_version_get


class SuiteSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.CharField(source="project.slug")
    model_name = serializers.CharField(help_text="the registered model the suite is for")
    name = serializers.CharField()
    version = serializers.IntegerField(help_text="an edit writes the next version; a version never changes")
    seed = serializers.IntegerField()
    tasks = serializers.JSONField(help_text="the tasks, as SuiteTasks validates them")
    digest = serializers.CharField(help_text="SHA-256 of the canonical JSON of tasks and seed")
    created_by = serializers.CharField(source="created_by.username")
    created_at = serializers.DateTimeField()


class SuiteRunTaskSerializer(serializers.Serializer):
    task = serializers.CharField()
    job = serializers.IntegerField(source="job_id")
    job_status = serializers.CharField(source="job.status")


class SuiteRunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    suite = serializers.IntegerField(source="suite_id")
    suite_name = serializers.CharField(source="suite.name")
    suite_version = serializers.IntegerField(source="suite.version")
    model_version = serializers.IntegerField(source="model_version_id")
    model_name = serializers.CharField(source="model_version.name")
    mlflow_version = serializers.IntegerField(source="model_version.version", help_text="MLflow's number")
    status = serializers.CharField(help_text="running, succeeded or failed")
    results = serializers.JSONField(help_text="{task: {metric: value}} once succeeded")
    digest = serializers.CharField(help_text="SHA-256 of the suite's digest, the jobs and the results")
    error = serializers.CharField()
    tasks = SuiteRunTaskSerializer(many=True, source="task_jobs.all", help_text="the job of each task")
    created_by = serializers.CharField(source="created_by.username")
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


class PredictionRowSerializer(serializers.Serializer):
    row = serializers.IntegerField(allow_null=True)
    input = serializers.CharField()
    prediction = serializers.CharField()
    extracted = serializers.CharField(
        allow_null=True, help_text="the answer extracted, where the task extracts"
    )
    reference = serializers.CharField()
    score = serializers.FloatField(allow_null=True, help_text="1 right, 0 wrong; null where unscored")


class SuiteRequest(ProjectRequest):
    """The first version of a suite of evaluation tasks for registered model ``model_name``."""

    model_name: str = Field(max_length=100)
    name: str = Field(max_length=100)
    tasks: suites.SuiteTasks
    seed: int = Field(default=1234, ge=0, le=2**32 - 1)


class SuiteVersionRequest(RequestModel):
    """The suite's next version: its tasks, and its seed (the current one unless given)."""

    tasks: suites.SuiteTasks
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)


class SuiteRunRequest(ProjectRequest):
    """Run a suite version on a model version of its model; cached per pair."""

    suite: Id
    model_version: Id


class SuiteListQuery(RequestModel):
    project: str = Field(max_length=64)
    model: str | None = Field(default=None, max_length=100)
    cursor: str | None = None
    limit: str | None = None


class SuiteRunListQuery(RequestModel):
    model_version: Id
    project: str | None = Field(default=None, max_length=64)
    cursor: str | None = None
    limit: str | None = None


class PredictionQuery(RequestModel):
    filter: Literal["all", "right", "wrong"] = "all"
    cursor: str | None = Field(default=None, max_length=18, pattern=r"^[0-9]+$")
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    project: str | None = Field(default=None, max_length=64)


def _suite_data(suite: Suite) -> dict[str, Any]:
    return SuiteSerializer(suite).data


def _run_data(run: SuiteRun) -> dict[str, Any]:
    return SuiteRunSerializer(run).data


PROJECT = OpenApiParameter("project", str, required=True)


class SuiteListApi(APIView):
    @extend_schema(
        operation_id="api_v1_suites_list",
        parameters=[PROJECT, OpenApiParameter("model", str, description="only this model's"), *PAGE],
        responses={200: results_of(SuiteSerializer), **ERRORS},
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        """Every version of every suite of the project (or of one model), newest first."""
        query = query_parse(request, SuiteListQuery)
        project = project_from_request(request)
        rows = suites.suite_list(project=project, model_name=query.model)
        return Response(page_answer(request, rows, lambda chunk: SuiteSerializer(chunk, many=True).data))

    @extend_schema(request=SuiteRequest, responses={201: SuiteSerializer, **ERRORS, 409: ErrorSerializer})
    def post(self, request: AuthenticatedRequest) -> Response:
        body = body_parse(request, SuiteRequest)
        project = project_from_request(request)
        suite = suites.suite_create(
            project=project,
            user=request.user,
            model_name=body.model_name,
            name=body.name,
            tasks=body.tasks.model_dump(mode="json"),
            seed=body.seed,
        )
        return Response(_suite_data(suite), status=status.HTTP_201_CREATED)


class SuiteDetailApi(APIView):
    @extend_schema(responses={200: SuiteSerializer, **ERRORS})
    def get(self, request: AuthenticatedRequest, suite_id: int) -> Response:
        return Response(_suite_data(suites.suite_get(user=request.user, suite_id=suite_id)))


class SuiteVersionApi(APIView):
    @extend_schema(
        request=SuiteVersionRequest,
        responses={
            201: OpenApiResponse(SuiteSerializer, description="The suite's next version."),
            **ERRORS,
            409: ErrorSerializer,
        },
    )
    def post(self, request: AuthenticatedRequest, suite_id: int) -> Response:
        """Write the next version of the suite ``suite_id`` belongs to (any of its versions names it)."""
        suite = suites.suite_get(user=request.user, suite_id=suite_id)
        body = body_parse(request, SuiteVersionRequest)
        new = suites.suite_version_create(
            suite=suite, user=request.user, tasks=body.tasks.model_dump(mode="json"), seed=body.seed
        )
        return Response(_suite_data(new), status=status.HTTP_201_CREATED)


class SuiteRunListApi(APIView):
    @extend_schema(
        operation_id="api_v1_suite_runs_list",
        parameters=[OpenApiParameter("model_version", int, required=True), *PAGE],
        responses={200: results_of(SuiteRunSerializer), **ERRORS},
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        """The suite runs of one model version, newest first."""
        query = query_parse(request, SuiteRunListQuery)
        version = model_version_get(user=request.user, model_version_id=query.model_version)
        rows = suites.suite_run_list(model_version=version).prefetch_related("task_jobs__job")
        return Response(page_answer(request, rows, lambda chunk: SuiteRunSerializer(chunk, many=True).data))

    @extend_schema(
        request=SuiteRunRequest,
        responses={
            201: OpenApiResponse(
                SuiteRunSerializer, description="A new run: one evaluate job per task, queued."
            ),
            200: OpenApiResponse(
                SuiteRunSerializer,
                description="The pair's run already (running or succeeded): no job started.",
            ),
            **ERRORS,
            409: ErrorSerializer,
        },
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        body = body_parse(request, SuiteRunRequest)
        suite = suites.suite_get(user=request.user, suite_id=body.suite)
        version = model_version_get(user=request.user, model_version_id=body.model_version)
        if version.project_id != suite.project_id:
            raise ValidationFailed(
                f"Suite {suite.pk} and model version {version.pk} are of different projects."
            )
        run, created = suites.suite_run_request(suite=suite, model_version=version, user=request.user)
        return Response(_run_data(run), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class SuiteRunDetailApi(APIView):
    @extend_schema(responses={200: SuiteRunSerializer, **ERRORS})
    def get(self, request: AuthenticatedRequest, suite_run_id: int) -> Response:
        return Response(_run_data(suites.suite_run_get(user=request.user, suite_run_id=suite_run_id)))


class SuiteRunPredictionsApi(APIView):
    @extend_schema(
        operation_id="api_v1_suite_run_predictions_list",
        parameters=[
            OpenApiParameter(
                "filter", str, enum=list(suite_results.PREDICTION_FILTERS), description="right or wrong only"
            ),
            *PAGE,
        ],
        responses={
            200: inline_serializer(
                "PredictionRowList",
                fields={
                    "results": PredictionRowSerializer(many=True),
                    "next": serializers.URLField(
                        allow_null=True, help_text="the next page; null on the last"
                    ),
                },
            ),
            **ERRORS,
            409: ErrorSerializer,
            503: ErrorSerializer,
        },
    )
    def get(self, request: AuthenticatedRequest, suite_run_id: int, task: str) -> Response:
        """A task's per-row inputs, predictions, extracted answers, references and scores, in row order."""
        run = suites.suite_run_get(user=request.user, suite_run_id=suite_run_id)
        query = query_parse(request, PredictionQuery)
        rows = suite_results.task_predictions(run=run, task=task, only=query.filter)
        # The rows are a finished job's table, which never changes: an offset is a stable cursor.
        start = int(query.cursor or 0)
        chunk = rows[start : start + query.limit]
        next_url = None
        if start + query.limit < len(rows):
            params = request.query_params.copy()
            params["cursor"] = str(start + query.limit)
            next_url = request.build_absolute_uri(f"{request.path}?{params.urlencode()}")
        return Response({"results": PredictionRowSerializer(chunk, many=True).data, "next": next_url})
