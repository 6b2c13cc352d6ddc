"""REST reads of model cards: a promotion's, and the one of what is deployed to a target.

JSON by default; Markdown with ``?format=markdown`` or ``Accept: text/markdown``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from pydantic import Field
from rest_framework import serializers
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.accounts.api import ERRORS
from controlplane.accounts.requests import AuthenticatedRequest
from controlplane.api_common import RequestModel, project_from_request, query_parse
from controlplane.errors import ValidationFailed
from controlplane.evidence import cards
from controlplane.evidence.models import ModelCard
from controlplane.registry.models import Target

FORMATS = ("json", "markdown")


class MarkdownRenderer(BaseRenderer):
    media_type = "text/markdown"
    format = "markdown"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        return str(data).encode()


class CardNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, with an unknown ``format`` a 400 that says which exist (not DRF's bare 404)."""

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        wanted = format_suffix or request.query_params.get(self.settings.URL_FORMAT_OVERRIDE)
        if wanted and wanted not in FORMATS:
            raise ValidationFailed(f"format: choose one of {', '.join(FORMATS)}, not {wanted[:40]!r}.")
        return super().select_renderer(request, renderers, format_suffix)


class ModelCardSerializer(serializers.Serializer):
    promotion = serializers.IntegerField(source="promotion_id")
    project = serializers.CharField(source="promotion.model_version.project.slug")
    model_name = serializers.CharField(source="promotion.model_version.name")
    mlflow_version = serializers.IntegerField(
        source="promotion.model_version.version", help_text="the version's number in MLflow's registry"
    )
    target = serializers.CharField(source="promotion.target")
    digest = serializers.CharField(help_text="SHA-256 of the canonical JSON of `card`")
    created_at = serializers.DateTimeField()
    card = serializers.JSONField(
        source="data",
        help_text="the card: model, base model, training, datasets with their checks, suites, review, "
        "gate, decision, libraries; each cited record with its digest",
    )


FORMAT = OpenApiParameter(
    "format", str, enum=list(FORMATS), description="markdown: the card as Markdown (or Accept: text/markdown)"
)
CARD_ANSWERS: dict[Any, Any] = {
    (200, "application/json"): ModelCardSerializer,
    (200, "text/markdown"): OpenApiTypes.STR,
    # A refusal is JSON whatever format was asked for.
    **{(code, "application/json"): serializer for code, serializer in ERRORS.items()},
}


class _CardApi(APIView):
    renderer_classes = [JSONRenderer, MarkdownRenderer]
    content_negotiation_class = CardNegotiation

    def _answer(self, request: Request, card: ModelCard) -> Response:
        if request.accepted_renderer.format == "markdown":
            return Response(card.markdown)
        return Response(ModelCardSerializer(card).data)

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        # A refusal is JSON whatever format was asked for: {"error", "message"}.
        if isinstance(response, Response) and not isinstance(response.data, str):
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), "application/json"
        return super().finalize_response(request, response, *args, **kwargs)


class PromotionCardApi(_CardApi):
    @extend_schema(
        operation_id="api_v1_promotions_card_retrieve", parameters=[FORMAT], responses=CARD_ANSWERS
    )
    def get(self, request: AuthenticatedRequest, promotion_id: int) -> Response:
        """The model card written when this promotion was approved; 404 before."""
        return self._answer(
            request, cards.model_card_of_promotion(user=request.user, promotion_id=promotion_id)
        )


class DeploymentCardQuery(RequestModel):
    project: str = Field(max_length=64)
    model: str = Field(max_length=100)
    format: Literal["json", "markdown"] | None = None


class DeploymentCardApi(_CardApi):
    @extend_schema(
        operation_id="api_v1_deployments_card_retrieve",
        parameters=[
            OpenApiParameter("target", str, OpenApiParameter.PATH, enum=Target.values),
            OpenApiParameter("project", str, required=True),
            OpenApiParameter("model", str, required=True, description="the registered model's name"),
            FORMAT,
        ],
        responses=CARD_ANSWERS,
    )
    def get(self, request: AuthenticatedRequest, target: str) -> Response:
        """The model card of what is deployed now to ``target``: the card of the approval that made it so."""
        # The project first: an outsider learns nothing, not even that the query lacks a field.
        project = project_from_request(request)
        query = query_parse(request, DeploymentCardQuery)
        card = cards.model_card_of_deployment(
            user=request.user, project=project, model_name=query.model, target=target
        )
        return self._answer(request, card)
