"""REST endpoints of the registry: register, request, approve, reject or withdraw, roll back, comment,
and what is deployed (now, and before)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from pydantic import Field
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.accounts.api import ERRORS, ErrorSerializer, results_of
from controlplane.accounts.models import ApiToken, Role, TokenScope
from controlplane.accounts.requests import AuthenticatedRequest
from controlplane.accounts.selectors import project_get
from controlplane.api_common import Flag, Id, RequestModel, body_parse, project_from_request
from controlplane.errors import Forbidden, ValidationFailed
from controlplane.paging import PARAMETERS as PAGE
from controlplane.paging import page_answer
from controlplane.registry import selectors, services
from controlplane.registry.models import Deployment, PromotionKind, Target
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
    kind = serializers.ChoiceField(
        choices=PromotionKind.choices, help_text="rollback: back to a version the target ran before"
    )
    requested_by = serializers.CharField(source="requested_by.username")
    requested_at = serializers.DateTimeField()
    comment = serializers.CharField()
    decided_by = serializers.CharField(source="decided_by.username", default=None)
    decided_at = serializers.DateTimeField(help_text="when it was decided, or withdrawn")
    decision_comment = serializers.CharField()
    override_reason = serializers.CharField(
        help_text="an admin's written reason for approving past a failing gate, or for an emergency rollback"
    )


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


class RollbackSerializer(PromotionSerializer):
    deployment = DeploymentSerializer(
        allow_null=True, help_text="what an emergency rollback deployed at once; null for a request"
    )


class PromotionCommentSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    promotion = serializers.IntegerField(source="promotion_id")
    author = serializers.CharField(source="author.username")
    at = serializers.DateTimeField()
    body = serializers.CharField()


class DeploymentHistoryEntrySerializer(serializers.Serializer):
    promotion = serializers.IntegerField(source="pk")
    kind = serializers.ChoiceField(choices=PromotionKind.choices)
    model_version = serializers.IntegerField(source="model_version_id", help_text="Tuneyard's id")
    mlflow_version = serializers.IntegerField(source="model_version.version", help_text="MLflow's number")
    requested_by = serializers.CharField(source="requested_by.username")
    approved_by = serializers.CharField(source="decided_by.username", default=None)
    approved_at = serializers.DateTimeField(source="decided_at")
    override_reason = serializers.CharField()
    current = serializers.BooleanField(help_text="what the target runs now")


class DeploymentHistorySerializer(serializers.Serializer):
    project = serializers.CharField()
    model = serializers.CharField()
    target = serializers.CharField()
    results = DeploymentHistoryEntrySerializer(many=True, help_text="oldest first, in the order decided")


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


class ApproveRequest(DecisionRequest):
    """Approve a promotion. Where a gate fails, only a project admin can, with a written reason."""

    override_reason: str = Field(
        default="", max_length=5000, description="why to approve past the failing gate (admins only)"
    )


class CommentRequest(RequestModel):
    body: str = Field(min_length=1, max_length=5000)


class RollbackRequest(RequestModel):
    """Put ``target`` back on ``model_version``, a version it ran before: a governed request that
    another approver decides, or (``emergency``, a project admin, with a ``reason``) done at once."""

    model_version: Id
    target: Target
    comment: str = Field(default="", max_length=5000)
    emergency: Flag = False
    reason: str = Field(default="", max_length=5000, description="required for an emergency rollback")


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
        request=ApproveRequest,
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
        body = body_parse(request, ApproveRequest)
        deployment = services.promotion_approve(
            promotion=promotion, user=request.user, comment=body.comment, override_reason=body.override_reason
        )
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


class PromotionWithdrawApi(APIView):
    @extend_schema(
        request=DecisionRequest,
        responses={
            200: OpenApiResponse(PromotionSerializer, description="Withdrawn by the person who asked."),
            **ERRORS,
            409: ErrorSerializer,
        },
    )
    def post(self, request: AuthenticatedRequest, promotion_id: int) -> Response:
        promotion = selectors.promotion_get(user=request.user, promotion_id=promotion_id)
        comment = body_parse(request, DecisionRequest).comment
        promotion = services.promotion_withdraw(promotion=promotion, user=request.user, comment=comment)
        return Response(PromotionSerializer(promotion).data)


class PromotionCommentListApi(APIView):
    @extend_schema(
        operation_id="api_v1_promotion_comments_list",
        parameters=PAGE,
        responses={200: results_of(PromotionCommentSerializer), **ERRORS},
    )
    def get(self, request: AuthenticatedRequest, promotion_id: int) -> Response:
        """The request's comments, oldest first."""
        promotion = selectors.promotion_get(user=request.user, promotion_id=promotion_id)
        comments = selectors.promotion_comment_list(promotion=promotion)
        return Response(
            page_answer(
                request,
                comments,
                lambda rows: PromotionCommentSerializer(rows, many=True).data,
                newest_first=False,
            )
        )

    @extend_schema(request=CommentRequest, responses={201: PromotionCommentSerializer, **ERRORS})
    def post(self, request: AuthenticatedRequest, promotion_id: int) -> Response:
        promotion = selectors.promotion_get(user=request.user, promotion_id=promotion_id)
        body = body_parse(request, CommentRequest).body
        comment = services.promotion_comment_add(promotion=promotion, user=request.user, body=body)
        return Response(PromotionCommentSerializer(comment).data, status=status.HTTP_201_CREATED)


class RollbackListApi(APIView):
    @extend_schema(
        request=RollbackRequest,
        responses={
            201: OpenApiResponse(
                RollbackSerializer,
                description="The rollback: a request for another approver, or (emergency) approved and "
                "deployed, with the deployment.",
            ),
            **ERRORS,
            409: ErrorSerializer,
        },
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        body = body_parse(request, RollbackRequest)
        version = selectors.model_version_get(user=request.user, model_version_id=body.model_version)
        deployment: Deployment | None = None
        if body.emergency:
            # It decides at once, as an approval does: a token needs the approve scope for it.
            token = request.auth
            if isinstance(token, ApiToken) and not token.has_scope(TokenScope.APPROVE):
                raise Forbidden("An emergency rollback needs an API token with the approve scope.")
            promotion, deployment = services.rollback_emergency(
                model_version=version, user=request.user, target=body.target, reason=body.reason
            )
        else:
            if body.reason:
                raise ValidationFailed("reason: only an emergency rollback takes a reason; use comment.")
            promotion = services.rollback_request(
                model_version=version, user=request.user, target=body.target, comment=body.comment
            )
        promotion = selectors.promotion_get(user=request.user, promotion_id=promotion.pk)
        answer = PromotionSerializer(promotion).data | {
            "deployment": DeploymentSerializer(deployment).data if deployment else None
        }
        return Response(answer, status=status.HTTP_201_CREATED)


class DeploymentHistoryApi(APIView):
    """What model ``model`` of ``project`` ran on a target, and when: every approved promotion and
    rollback, in the order decided."""

    @extend_schema(
        parameters=[
            OpenApiParameter("target", str, OpenApiParameter.PATH, enum=Target.values),
            PROJECT,
            OpenApiParameter("model", str, required=True, description="the registered model's name"),
        ],
        responses={200: DeploymentHistorySerializer, **ERRORS},
    )
    def get(self, request: AuthenticatedRequest, target: str) -> Response:
        project = project_from_request(request)
        if target not in Target.values:
            raise ValidationFailed(f"Unknown target {target!r}; choose one of {', '.join(Target.values)}.")
        model = request.query_params.get("model", "")
        if not model:
            raise ValidationFailed("Say which model: the 'model' parameter is required.")
        history = list(selectors.deployment_history(project=project, model_name=model, target=target))
        now = selectors.deployed_promotion_ids(project=project, model_name=model)
        for entry in history:
            entry.current = entry.pk in now  # type: ignore[attr-defined]
        return Response(
            DeploymentHistorySerializer(
                {"project": project.slug, "model": model, "target": target, "results": history}
            ).data
        )
