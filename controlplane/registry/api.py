"""REST endpoints of the registry: register, request, approve or reject, and what is deployed."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from pydantic import Field
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.accounts.api import ERRORS, ErrorSerializer, results_of
from controlplane.accounts.models import Role
from controlplane.accounts.requests import AuthenticatedRequest
from controlplane.accounts.selectors import project_get
from controlplane.api_common import Id, RequestModel, body_parse, project_from_request
from controlplane.errors import ValidationFailed
from controlplane.paging import PARAMETERS as PAGE
from controlplane.paging import page_answer
from controlplane.registry import selectors, services
from controlplane.registry.models import Target
from controlplane.training.selectors import job_get


class ModelVersionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.CharField(source="project.slug")
    name = serializers.CharField()
    mlflow_version = serializers.IntegerField(
        source="version", help_text="the version's number in MLflow's registry"
    )
    job = serializers.IntegerField(source="job_id")
    source_uri = serializers.CharField()
    mlflow_name = serializers.CharField()
    mlflow_uri = serializers.CharField()
    created_by = serializers.CharField(source="created_by.username")
    created_at = serializers.DateTimeField()


class PromotionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    model_version = serializers.IntegerField(source="model_version_id")
    model_name = serializers.CharField(source="model_version.name")
    mlflow_version = serializers.IntegerField(source="model_version.version", help_text="MLflow's number")
    target = serializers.CharField()
    status = serializers.CharField()
    requested_by = serializers.CharField(source="requested_by.username")
    requested_at = serializers.DateTimeField()
    comment = serializers.CharField()
    decided_by = serializers.CharField(source="decided_by.username", default=None)
    decided_at = serializers.DateTimeField()
    decision_comment = serializers.CharField()


class DeploymentSerializer(serializers.Serializer):
    project = serializers.CharField(source="project.slug")
    target = serializers.CharField()
    model_name = serializers.CharField()
    mlflow_version = serializers.IntegerField(source="model_version.version", help_text="MLflow's number")
    model_version = serializers.IntegerField(
        source="model_version_id", help_text="Tuneyard's model version id"
    )
    mlflow_model_name = serializers.CharField(source="model_version.mlflow_name")
    mlflow_model_uri = serializers.CharField(source="model_version.mlflow_uri")
    source_uri = serializers.CharField(source="model_version.source_uri")
    approved_by = serializers.CharField(source="approved_by.username")
    approved_at = serializers.DateTimeField()


class PromotionDecidedSerializer(PromotionSerializer):
    deployment = DeploymentSerializer(help_text="what the approval deployed")


class ModelVersionRequest(RequestModel):
    """Register what a succeeded finetune trained as the next version of model ``name``."""

    job: Id
    name: str = Field(max_length=100)


class PromotionRequest(RequestModel):
    """Ask for a model version to be deployed to ``target``; another approver decides."""

    model_version: Id
    target: Target
    comment: str = Field(default="", max_length=5000)


class DecisionRequest(RequestModel):
    comment: str = Field(default="", max_length=5000)


PROJECT = OpenApiParameter("project", str, required=True)


class ModelVersionListApi(APIView):
    @extend_schema(
        operation_id="api_v1_model_versions_list",
        parameters=[PROJECT, *PAGE],
        responses={200: results_of(ModelVersionSerializer), **ERRORS},
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        project = project_from_request(request)
        versions = selectors.model_version_list(project=project)
        return Response(
            page_answer(request, versions, lambda rows: ModelVersionSerializer(rows, many=True).data)
        )

    @extend_schema(
        request=ModelVersionRequest,
        responses={
            201: OpenApiResponse(ModelVersionSerializer, description="The job's result, registered."),
            200: OpenApiResponse(
                ModelVersionSerializer,
                description="The job was registered under this name already: that version, unchanged.",
            ),
            **ERRORS,
            409: ErrorSerializer,
        },
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        """Register a succeeded finetune's result; registering the same job and name again
        answers 200 with the version it already has, instead of making another."""
        body = body_parse(request, ModelVersionRequest)
        job = job_get(user=request.user, job_id=body.job)
        version, created = services.model_version_get_or_create(job=job, user=request.user, name=body.name)
        answer = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(ModelVersionSerializer(version).data, status=answer)


class ModelVersionDetailApi(APIView):
    @extend_schema(responses={200: ModelVersionSerializer, **ERRORS})
    def get(self, request: AuthenticatedRequest, model_version_id: int) -> Response:
        version = selectors.model_version_get(user=request.user, model_version_id=model_version_id)
        return Response(ModelVersionSerializer(version).data)


class PromotionDetailApi(APIView):
    @extend_schema(responses={200: PromotionSerializer, **ERRORS})
    def get(self, request: AuthenticatedRequest, promotion_id: int) -> Response:
        promotion = selectors.promotion_get(user=request.user, promotion_id=promotion_id)
        return Response(PromotionSerializer(promotion).data)


class PromotionListApi(APIView):
    @extend_schema(
        operation_id="api_v1_promotions_list",
        parameters=[PROJECT, *PAGE],
        responses={200: results_of(PromotionSerializer), **ERRORS},
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        project = project_from_request(request)
        promotions = selectors.promotion_list(project=project)
        return Response(
            page_answer(request, promotions, lambda rows: PromotionSerializer(rows, many=True).data)
        )

    @extend_schema(
        request=PromotionRequest, responses={201: PromotionSerializer, **ERRORS, 409: ErrorSerializer}
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        body = body_parse(request, PromotionRequest)
        version = selectors.model_version_get(user=request.user, model_version_id=body.model_version)
        promotion = services.promotion_request(
            model_version=version, user=request.user, target=body.target, comment=body.comment
        )
        return Response(PromotionSerializer(promotion).data, status=status.HTTP_201_CREATED)


class PromotionApproveApi(APIView):
    @extend_schema(
        request=DecisionRequest,
        responses={
            200: OpenApiResponse(
                PromotionDecidedSerializer, description="Approved: the promotion, with what is now deployed."
            ),
            **ERRORS,
            409: ErrorSerializer,
        },
    )
    def post(self, request: AuthenticatedRequest, promotion_id: int) -> Response:
        promotion = selectors.promotion_get(user=request.user, promotion_id=promotion_id)
        comment = body_parse(request, DecisionRequest).comment
        deployment = services.promotion_approve(promotion=promotion, user=request.user, comment=comment)
        promotion = selectors.promotion_get(user=request.user, promotion_id=promotion_id)
        # As reject does, the promotion acted on; the deployment it made rides along.
        return Response(
            PromotionSerializer(promotion).data | {"deployment": DeploymentSerializer(deployment).data}
        )


class PromotionRejectApi(APIView):
    @extend_schema(
        request=DecisionRequest, responses={200: PromotionSerializer, **ERRORS, 409: ErrorSerializer}
    )
    def post(self, request: AuthenticatedRequest, promotion_id: int) -> Response:
        promotion = selectors.promotion_get(user=request.user, promotion_id=promotion_id)
        comment = body_parse(request, DecisionRequest).comment
        promotion = services.promotion_reject(promotion=promotion, user=request.user, comment=comment)
        return Response(PromotionSerializer(promotion).data)


class DeploymentListApi(APIView):
    """What is deployed to a target, for CI/CD: one row per model, optionally one project's."""

    @extend_schema(
        operation_id="api_v1_deployments_list",
        parameters=[
            OpenApiParameter("target", str, OpenApiParameter.PATH, enum=Target.values),
            OpenApiParameter("project", str, description="only this project's"),
            OpenApiParameter("model", str, description="only this model's"),
            *PAGE,
        ],
        responses={200: results_of(DeploymentSerializer), **ERRORS},
    )
    def get(self, request: AuthenticatedRequest, target: str) -> Response:
        if target not in Target.values:
            raise ValidationFailed(f"Unknown target {target!r}; choose one of {', '.join(Target.values)}.")
        slug = request.query_params.get("project")
        project = project_get(user=request.user, slug=slug, role=Role.VIEWER) if slug else None
        deployments = selectors.deployment_list(user=request.user, target=target, project=project)
        if model := request.query_params.get("model"):
            deployments = deployments.filter(model_name=model)
        return Response(
            page_answer(request, deployments, lambda rows: DeploymentSerializer(rows, many=True).data)
        )
