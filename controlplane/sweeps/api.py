from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.accounts.models import Role
from controlplane.api_common import MAX_ID, project_from_request, request_body
from controlplane.errors import pydantic_parse
from controlplane.sweeps import selectors, services
from controlplane.sweeps.models import SweepStatus


class SweepRequest(BaseModel):
    """A new sweep, as the API takes it; the service checks the meaning (space, choices, ranges)."""

    model_config = ConfigDict(extra="forbid")

    project: str
    name: str = Field("", max_length=200)
    base_model: int = Field(ge=1, le=MAX_ID)
    dataset_version: int = Field(ge=1, le=MAX_ID)
    config: dict[str, Any] = Field(default_factory=dict)
    search_space: dict[str, Any]
    objective_metric: str = "train_loss"
    direction: str = "minimize"
    sampler: str = "tpe"
    pruner: str = "median"
    n_trials: int = 10
    parallelism: int = 1
    gpu_hours_cap: float | None = None
    seed: int = 0


class TrialSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    job = serializers.IntegerField(source="job_id")
    job_status = serializers.CharField(source="job.status")
    state = serializers.CharField()
    value = serializers.FloatField(allow_null=True)
    params = serializers.JSONField()


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
    n_trials = serializers.IntegerField()
    parallelism = serializers.IntegerField()
    gpu_hours_cap = serializers.FloatField(allow_null=True)
    trials_launched = serializers.IntegerField()
    search_space = serializers.JSONField()
    base_config = serializers.JSONField()
    created_by = serializers.CharField(source="created_by.username")
    created_at = serializers.DateTimeField()


def _detail(sweep) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    best = selectors.sweep_best_trial(sweep=sweep)
    trials = selectors.sweep_trials(sweep=sweep)
    return SweepSerializer(sweep).data | {
        "trials": TrialSerializer(trials, many=True).data,
        "best_trial": TrialSerializer(best).data if best else None,
    }


class SweepListApi(APIView):
    def get(self, request: Request) -> Response:
        project = project_from_request(request)
        return Response({"results": SweepSerializer(selectors.sweep_list(project=project), many=True).data})

    def post(self, request: Request) -> Response:
        # The project first: an outsider learns nothing from the body's errors.
        project = project_from_request(request, role=Role.MEMBER)
        body = pydantic_parse(SweepRequest, dict(request_body(request)))
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
        )
        return Response(_detail(sweep), status=status.HTTP_201_CREATED)


class SweepDetailApi(APIView):
    def get(self, request: Request, sweep_id: int) -> Response:
        return Response(_detail(selectors.sweep_get(user=request.user, sweep_id=sweep_id)))


class SweepActionApi(APIView):
    """``POST sweeps/<id>/<action>``: pause, resume, stop, add-trials {"count"}, rerun-failed."""

    action = ""

    def post(self, request: Request, sweep_id: int) -> Response:
        sweep = selectors.sweep_get(user=request.user, sweep_id=sweep_id)
        if self.action == "add-trials":
            count = request_body(request).get("count")
            if isinstance(count, bool) or not isinstance(count, int):
                count = 0  # the service says what is wrong with it
            services.sweep_trials_add(sweep=sweep, user=request.user, count=count)
        elif self.action == "rerun-failed":
            services.sweep_failed_rerun(sweep=sweep, user=request.user)
        else:
            to = {"pause": SweepStatus.PAUSED, "resume": SweepStatus.RUNNING, "stop": SweepStatus.STOPPED}
            services.sweep_status_set(sweep=sweep, user=request.user, to=to[self.action])
        sweep.refresh_from_db()
        return Response(_detail(sweep))
