"""REST endpoints of webhooks: subscriptions, their secrets, the delivery log and redelivery."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from pydantic import Field
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.accounts.api import ERRORS, results_of
from controlplane.accounts.models import Role
from controlplane.accounts.requests import AuthenticatedRequest
from controlplane.api_common import (
    Flag,
    Id,
    ProjectRequest,
    RequestModel,
    body_parse,
    project_from_request,
    query_parse,
)
from controlplane.paging import PARAMETERS as PAGE
from controlplane.paging import page_answer
from controlplane.webhooks import selectors, services
from controlplane.webhooks.models import EventType


class EndpointSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.CharField(source="project.slug")
    url = serializers.URLField()
    description = serializers.CharField()
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=EventType.choices), help_text="empty: every event"
    )
    enabled = serializers.BooleanField()
    created_by = serializers.CharField(source="created_by.username")
    created_at = serializers.DateTimeField()


class EndpointSecretSerializer(EndpointSerializer):
    secret = serializers.CharField(
        help_text="Standard Webhooks secret (whsec_...): verify signatures with it"
    )
    previous_secret_expires_at = serializers.DateTimeField(
        allow_null=True, help_text="until then the rotated-out secret signs too"
    )


class AttemptSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    response_status = serializers.IntegerField(allow_null=True)
    error = serializers.CharField()
    response_body = serializers.CharField()
    duration_ms = serializers.IntegerField()
    requested_by = serializers.CharField(source="requested_by.username", default=None)


class DeliverySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    webhook = serializers.IntegerField(source="endpoint_id")
    message_id = serializers.CharField(help_text="the webhook-id header: the same on every attempt")
    event_type = serializers.CharField(source="event.type")
    status = serializers.CharField(help_text="pending, succeeded or failed")
    attempts = serializers.IntegerField()
    next_attempt_at = serializers.DateTimeField(help_text="when pending: when it is tried again")
    last_attempt_at = serializers.DateTimeField(allow_null=True)
    response_status = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField()
    created_at = serializers.DateTimeField()


class DeliveryDetailSerializer(DeliverySerializer):
    payload = serializers.JSONField(source="event.data")
    attempt_log = AttemptSerializer(many=True)


class EndpointCreateRequest(ProjectRequest):
    url: str = Field(max_length=2000, description="https:// URL of a public host")
    event_types: list[EventType] = Field(default_factory=list, description="empty: every event")
    description: str = Field(default="", max_length=200)


class EndpointUpdateRequest(RequestModel):
    url: str | None = Field(default=None, max_length=2000)
    event_types: list[EventType] | None = None
    description: str | None = Field(default=None, max_length=200)
    enabled: Flag | None = None


class DeliveryListQuery(RequestModel):
    cursor: Id | None = Field(default=None, description="the `next` of the previous page")


PROJECT = OpenApiParameter("project", str, required=True)
CURSOR = OpenApiParameter("cursor", int, required=False, description="from the previous page's `next`")


class WebhookListApi(APIView):
    @extend_schema(
        operation_id="api_v1_webhooks_list",
        parameters=[PROJECT, *PAGE],
        responses={200: results_of(EndpointSerializer), **ERRORS},
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        project = project_from_request(request, role=Role.ADMIN)
        rows = selectors.endpoint_list(project=project).select_related("project", "created_by")
        return Response(
            page_answer(
                request, rows, lambda page: EndpointSerializer(page, many=True).data, newest_first=False
            )
        )

    @extend_schema(request=EndpointCreateRequest, responses={201: EndpointSecretSerializer, **ERRORS})
    def post(self, request: AuthenticatedRequest) -> Response:
        project = project_from_request(request, role=Role.ADMIN)
        body = body_parse(request, EndpointCreateRequest)
        endpoint = services.endpoint_create(
            project=project,
            user=request.user,
            url=body.url,
            event_types=[t.value for t in body.event_types],
            description=body.description,
        )
        return Response(EndpointSecretSerializer(endpoint).data, status=status.HTTP_201_CREATED)


class WebhookDetailApi(APIView):
    @extend_schema(responses={200: EndpointSecretSerializer, **ERRORS})
    def get(self, request: AuthenticatedRequest, webhook_id: int) -> Response:
        endpoint = selectors.endpoint_get(user=request.user, endpoint_id=webhook_id)
        return Response(EndpointSecretSerializer(endpoint).data)

    @extend_schema(request=EndpointUpdateRequest, responses={200: EndpointSecretSerializer, **ERRORS})
    def patch(self, request: AuthenticatedRequest, webhook_id: int) -> Response:
        endpoint = selectors.endpoint_get(user=request.user, endpoint_id=webhook_id)
        body = body_parse(request, EndpointUpdateRequest)
        endpoint = services.endpoint_update(
            endpoint=endpoint,
            user=request.user,
            url=body.url,
            event_types=None if body.event_types is None else [t.value for t in body.event_types],
            description=body.description,
            enabled=body.enabled,
        )
        return Response(EndpointSecretSerializer(endpoint).data)

    @extend_schema(responses={204: None, **ERRORS})
    def delete(self, request: AuthenticatedRequest, webhook_id: int) -> Response:
        endpoint = selectors.endpoint_get(user=request.user, endpoint_id=webhook_id)
        services.endpoint_delete(endpoint=endpoint, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookSecretRotateApi(APIView):
    @extend_schema(request=None, responses={200: EndpointSecretSerializer, **ERRORS})
    def post(self, request: AuthenticatedRequest, webhook_id: int) -> Response:
        endpoint = selectors.endpoint_get(user=request.user, endpoint_id=webhook_id)
        endpoint = services.endpoint_secret_rotate(endpoint=endpoint, user=request.user)
        return Response(EndpointSecretSerializer(endpoint).data)


def _page(request: AuthenticatedRequest, rows: list[Any], cursor: int | None) -> dict[str, Any]:
    next_url = None
    if cursor is not None:
        query = request.query_params.copy()
        query["cursor"] = str(cursor)
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return {"results": DeliverySerializer(rows, many=True).data, "next": next_url}


class WebhookDeliveryListApi(APIView):
    @extend_schema(
        operation_id="api_v1_webhooks_deliveries_list",
        parameters=[CURSOR],
        responses={
            200: inline_serializer(
                "DeliveryList",
                {"results": DeliverySerializer(many=True), "next": serializers.URLField(allow_null=True)},
            ),
            **ERRORS,
        },
    )
    def get(self, request: AuthenticatedRequest, webhook_id: int) -> Response:
        endpoint = selectors.endpoint_get(user=request.user, endpoint_id=webhook_id)
        query = query_parse(request, DeliveryListQuery)
        rows, cursor = selectors.delivery_page(
            project=endpoint.project, endpoint=endpoint, before=query.cursor
        )
        return Response(_page(request, rows, cursor))


class WebhookDeliveryDetailApi(APIView):
    @extend_schema(responses={200: DeliveryDetailSerializer, **ERRORS})
    def get(self, request: AuthenticatedRequest, delivery_id: int) -> Response:
        delivery = selectors.delivery_get(user=request.user, delivery_id=delivery_id)
        return Response(DeliveryDetailSerializer(delivery).data)


class WebhookRedeliverApi(APIView):
    @extend_schema(request=None, responses={200: DeliveryDetailSerializer, **ERRORS})
    def post(self, request: AuthenticatedRequest, delivery_id: int) -> Response:
        delivery = selectors.delivery_get(user=request.user, delivery_id=delivery_id)
        delivery = services.delivery_redeliver(delivery=delivery, user=request.user)
        delivery = selectors.delivery_get(user=request.user, delivery_id=delivery.pk)
        return Response(DeliveryDetailSerializer(delivery).data)
