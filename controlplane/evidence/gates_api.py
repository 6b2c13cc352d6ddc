"""REST endpoints of gates: a model's policy per target, a promotion's gate report, PII acknowledgements."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from pydantic import Field
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.accounts.api import ERRORS, ErrorSerializer
from controlplane.accounts.requests import AuthenticatedRequest
from controlplane.api_common import (
    ProjectRequest,
    RequestModel,
    body_parse,
    project_from_request,
    query_parse,
)
from controlplane.errors import NotFound
from controlplane.evidence import gates
from controlplane.registry.models import Target
from controlplane.registry.selectors import promotion_get


class GatePolicySerializer(serializers.Serializer):
    project = serializers.CharField(source="project.slug")
    model_name = serializers.CharField()
    target = serializers.CharField()
    rules = serializers.JSONField(help_text="the rules, as GateRules validates them")
    updated_by = serializers.CharField(source="updated_by.username")
    updated_at = serializers.DateTimeField()


class GateRuleResultSerializer(serializers.Serializer):
    kind = serializers.CharField(
        help_text="absolute, relative, judge_win_rate, no_contamination or pii_clean"
    )
    rule = serializers.CharField(help_text="the rule in words")
    spec = serializers.JSONField(help_text="the rule as written in the policy")
    status = serializers.CharField(help_text="pass, fail or pending")
    detail = serializers.CharField(help_text="the figures in a sentence")
    figures = serializers.JSONField(
        help_text="the figures read, and the suite runs (id, digest) they came from"
    )


class GateReportSerializer(serializers.Serializer):
    rules = GateRuleResultSerializer(many=True)
    passed = serializers.BooleanField(help_text="every rule passes")
    pending = serializers.BooleanField(help_text="a rule waits on a running suite or check")
    kept = serializers.BooleanField(help_text="the verdict kept at the decision, not recomputed")
    digest = serializers.CharField(help_text="SHA-256 of the canonical JSON of the rules' results")
    checked_at = serializers.DateTimeField()


class PiiAcknowledgementSerializer(serializers.Serializer):
    operation = serializers.IntegerField(source="operation_id", help_text="the PII scan acknowledged")
    acknowledged_by = serializers.CharField(source="acknowledged_by.username")
    reason = serializers.CharField()
    at = serializers.DateTimeField()


class GatePolicyQuery(RequestModel):
    project: str = Field(max_length=64)
    model: str = Field(max_length=100)
    target: Target


class GatePolicyRequest(ProjectRequest):
    """The rules a version of ``model`` must pass to reach ``target``; replaces the current ones."""

    model: str = Field(max_length=100)
    target: Target
    rules: gates.GateRules


class PiiAcknowledgementRequest(RequestModel):
    reason: str = Field(min_length=1, max_length=2000)


POLICY = [
    OpenApiParameter("project", str, required=True),
    OpenApiParameter("model", str, required=True),
    OpenApiParameter("target", str, required=True, enum=Target.values),
]


def _policy_data(policy: Any) -> dict[str, Any]:
    return GatePolicySerializer(policy).data


class GatePolicyApi(APIView):
    @extend_schema(parameters=POLICY, responses={200: GatePolicySerializer, **ERRORS})
    def get(self, request: AuthenticatedRequest) -> Response:
        query = query_parse(request, GatePolicyQuery)
        project = project_from_request(request)
        policy = gates.gate_policy_get(project=project, model_name=query.model, target=query.target)
        if policy is None:
            raise NotFound(f"{query.model} has no gate policy for {query.target}.")
        return Response(_policy_data(policy))

    @extend_schema(request=GatePolicyRequest, responses={200: GatePolicySerializer, **ERRORS})
    def put(self, request: AuthenticatedRequest) -> Response:
        """Set the gate (approvers and admins); every change is kept with who made it."""
        body = body_parse(request, GatePolicyRequest)
        project = project_from_request(request)
        policy = gates.gate_policy_set(
            project=project,
            user=request.user,
            model_name=body.model,
            target=body.target,
            rules=body.rules.model_dump(mode="json"),
        )
        return Response(_policy_data(policy))


class PromotionGateReportApi(APIView):
    @extend_schema(responses={200: GateReportSerializer, **ERRORS})
    def get(self, request: AuthenticatedRequest, promotion_id: int) -> Response:
        """Each rule of the gate on this promotion: pass, fail or pending with its figures. Once the
        promotion is decided, the verdict kept then. A 404 when no gate policy applies."""
        promotion = promotion_get(user=request.user, promotion_id=promotion_id)
        report = gates.gate_report(promotion=promotion)
        if report is None:
            raise NotFound("No gate policy applies to this promotion.")
        return Response(GateReportSerializer(report).data)


class PromotionPiiAcknowledgementApi(APIView):
    @extend_schema(
        request=PiiAcknowledgementRequest,
        responses={201: PiiAcknowledgementSerializer, **ERRORS, 409: ErrorSerializer},
    )
    def post(self, request: AuthenticatedRequest, promotion_id: int) -> Response:
        """An approver accepts what the PII scan of the challenger's training data found, with a reason."""
        promotion = promotion_get(user=request.user, promotion_id=promotion_id)
        body = body_parse(request, PiiAcknowledgementRequest)
        ack = gates.pii_acknowledge(promotion=promotion, user=request.user, reason=body.reason)
        return Response(PiiAcknowledgementSerializer(ack).data, status=status.HTTP_201_CREATED)
