"""REST endpoints of sweeps: create, read, steer; and the internal endpoint a Ray driver reports to."""

from __future__ import annotations

from typing import Annotated, Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from pydantic import Field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.accounts.api import ERRORS, ErrorSerializer, results_of
from controlplane.accounts.models import Role
from controlplane.accounts.requests import AuthenticatedRequest
from controlplane.api_common import (
    Id,
    IsWorker,
    ProjectRequest,
    RequestModel,
    Whole,
    WorkerTokenAuthentication,
    body_parse,
    project_from_request,
)
from controlplane.errors import pydantic_parse
from controlplane.paging import PARAMETERS as PAGE
from controlplane.paging import page_answer
from controlplane.sweeps import raysweeps, selectors, services
from controlplane.sweeps.models import Backend, Direction, Pruner, Sampler, Sweep, SweepStatus, Trial
from controlplane.sweeps.services import MAX_TRIALS
from workers.spec import SweepTrialReport, TrainingConfig


class SweepRequest(ProjectRequest):
    """A new sweep, as the API takes it; the service checks the meaning (the space, what a backend allows)."""

    name: str = Field(default="", max_length=200)
    base_model: Id
    dataset_version: Id
    config: TrainingConfig = Field(default_factory=TrainingConfig)
    search_space: dict[str, Any]
    objective_metric: str = Field(default="train_loss", min_length=1, max_length=100)
    direction: Direction = Direction.MINIMIZE
    sampler: Sampler = Sampler.TPE
    # None: the backend's usual pruner (median for optuna, successive_halving, i.e. ASHA, for ray).
    pruner: Pruner | None = None
    n_trials: Annotated[Whole, Field(ge=1, le=MAX_TRIALS)] = 10
    parallelism: Annotated[Whole, Field(ge=1, le=100)] = 1
    gpu_hours_cap: float | None = Field(default=None, gt=0, lt=1e6)
    seed: Annotated[Whole, Field(ge=0, lt=2**31)] = 0
    backend: Backend = Backend.OPTUNA


class AddTrialsRequest(RequestModel):
    count: Annotated[Whole, Field(ge=1, le=MAX_TRIALS)]


class TrialSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    # A Ray sweep's trials run inside its driver job and have no job of their own.
    job = serializers.IntegerField(source="job_id", allow_null=True)
    job_status = serializers.SerializerMethodField()
    state = serializers.CharField()
    value = serializers.FloatField(allow_null=True)
    params = serializers.JSONField()
    intermediate_values = serializers.JSONField()
    mlflow_run_id = serializers.CharField()
    error = serializers.CharField()

    def get_job_status(self, trial: Trial) -> str | None:
        return trial.job.status if trial.job is not None else None


class SweepSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.CharField(source="project.slug")
    name = serializers.CharField()
    status = serializers.CharField()
    stop_reason = serializers.CharField()
    objective_metric = serializers.CharField()
    direction = serializers.CharField()
    sampler = serializers.CharField()
    pruner = serializers.CharField()
    backend = serializers.CharField()
    driver_job = serializers.IntegerField(source="driver_job_id", allow_null=True)
    n_trials = serializers.IntegerField()
    parallelism = serializers.IntegerField()
    gpu_hours_cap = serializers.FloatField(allow_null=True)
    trials_launched = serializers.IntegerField()
    search_space = serializers.JSONField()
    base_config = serializers.JSONField()
    created_by = serializers.CharField(source="created_by.username")
    created_at = serializers.DateTimeField()


class SweepDetailSerializer(SweepSerializer):
    trials = TrialSerializer(many=True)
    best_trial = TrialSerializer(allow_null=True)


def _detail(sweep: Sweep) -> dict[str, Any]:
    best = selectors.sweep_best_trial(sweep=sweep)
    trials = selectors.sweep_trials(sweep=sweep)
    return SweepSerializer(sweep).data | {
        "trials": TrialSerializer(trials, many=True).data,
        "best_trial": TrialSerializer(best).data if best else None,
    }


class SweepListApi(APIView):
    @extend_schema(
        operation_id="api_v1_sweeps_list",
        parameters=[OpenApiParameter("project", str, required=True), *PAGE],
        responses={200: results_of(SweepSerializer), **ERRORS},
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        project = project_from_request(request)
        sweeps = selectors.sweep_list(project=project)
        return Response(page_answer(request, sweeps, lambda rows: SweepSerializer(rows, many=True).data))

    @extend_schema(request=SweepRequest, responses={201: SweepDetailSerializer, **ERRORS})
    def post(self, request: AuthenticatedRequest) -> Response:
        # The project first: an outsider learns nothing from the body's errors.
        project = project_from_request(request, role=Role.MEMBER)
        body = body_parse(request, SweepRequest)
        sweep = services.sweep_create(
            project=project,
            user=request.user,
            name=body.name,
            base_model_id=body.base_model,
            dataset_version_id=body.dataset_version,
            config=body.config,
            search_space=body.search_space,
            objective_metric=body.objective_metric,
            direction=body.direction,
            sampler=body.sampler,
            pruner=body.pruner,
            n_trials=body.n_trials,
            parallelism=body.parallelism,
            gpu_hours_cap=body.gpu_hours_cap,
            seed=body.seed,
            backend=body.backend,
        )
        return Response(_detail(sweep), status=status.HTTP_201_CREATED)


class SweepDetailApi(APIView):
    @extend_schema(responses={200: SweepDetailSerializer, **ERRORS})
    def get(self, request: AuthenticatedRequest, sweep_id: int) -> Response:
        return Response(_detail(selectors.sweep_get(user=request.user, sweep_id=sweep_id)))


class SweepActionApi(APIView):
    """``POST sweeps/<id>/<action>``: pause, resume, stop, add-trials {"count"}, rerun-failed."""

    action = ""

    @extend_schema(
        request=AddTrialsRequest,
        description='Only add-trials reads a body, ``{"count"}``; the other actions take none.',
        responses={200: SweepDetailSerializer, **ERRORS, 409: ErrorSerializer},
    )
    def post(self, request: AuthenticatedRequest, sweep_id: int) -> Response:
        sweep = selectors.sweep_get(user=request.user, sweep_id=sweep_id)
        if self.action == "add-trials":
            count = body_parse(request, AddTrialsRequest).count
            services.sweep_trials_add(sweep=sweep, user=request.user, count=count)
        elif self.action == "rerun-failed":
            services.sweep_failed_rerun(sweep=sweep, user=request.user)
        else:
            to = {"pause": SweepStatus.PAUSED, "resume": SweepStatus.RUNNING, "stop": SweepStatus.STOPPED}
            services.sweep_status_set(sweep=sweep, user=request.user, to=to[self.action])
        sweep.refresh_from_db()
        return Response(_detail(sweep))


# --- the internal API a Ray sweep's driver job calls ---------------------------


class SweepTrialReportApi(APIView):
    """``POST internal/v1/jobs/<id>/sweep-trials``: a driver job reports one of its trials."""

    authentication_classes = [WorkerTokenAuthentication]
    permission_classes = [IsWorker]

    @extend_schema(
        request=SweepTrialReport,
        responses={
            200: inline_serializer(
                "SweepTrialRecorded",
                fields={"number": serializers.IntegerField(), "state": serializers.CharField()},
            ),
            **ERRORS,
            409: ErrorSerializer,
        },
    )
    def post(self, request: Request, job_id: int) -> Response:
        report = pydantic_parse(SweepTrialReport, request.data)
        trial = raysweeps.ray_trial_record(job_id=job_id, report=report)
        return Response({"number": trial.number, "state": trial.state})
