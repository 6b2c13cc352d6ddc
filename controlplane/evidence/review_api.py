"""REST endpoints of the blind side-by-side review: the prompts and the tally, votes, their export."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from pydantic import Field
from rest_framework import serializers, status
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.accounts.api import ERRORS, ErrorSerializer, results_of
from controlplane.accounts.requests import AuthenticatedRequest
from controlplane.api_common import RequestModel, Whole, body_parse
from controlplane.errors import ValidationFailed
from controlplane.evidence import review, review_tally
from controlplane.evidence.models import Vote
from controlplane.paging import MAX_LIMIT, page_answer
from controlplane.paging import PARAMETERS as PAGE
from controlplane.registry.selectors import promotion_get


class ReviewVersionSerializer(serializers.Serializer):
    model_version = serializers.IntegerField(source="pk", help_text="Tuneyard's model version id")
    name = serializers.CharField()
    mlflow_version = serializers.IntegerField(source="version", help_text="MLflow's number")


class ReviewTallySerializer(serializers.Serializer):
    votes = serializers.IntegerField()
    wins = serializers.IntegerField(help_text="votes for the challenger")
    ties = serializers.IntegerField()
    losses = serializers.IntegerField(help_text="votes for the champion")
    win_rate = serializers.FloatField(allow_null=True, help_text="(wins + ties / 2) / votes")
    ci_low = serializers.FloatField(help_text="95% Wilson score interval of the win rate")
    ci_high = serializers.FloatField()
    interval = serializers.CharField()


class ReviewPromptSerializer(serializers.Serializer):
    task = serializers.CharField()
    row = serializers.IntegerField()
    suite = serializers.CharField()
    input = serializers.CharField()
    reference = serializers.CharField()
    answer_a = serializers.CharField()
    answer_b = serializers.CharField()
    my_vote = serializers.CharField(allow_null=True, help_text="your vote: a, b or tie; null if none")
    challenger_side = serializers.ChoiceField(
        choices=["a", "b"], allow_null=True, help_text="null until you voted on it (or it is decided)"
    )
    score_a = serializers.FloatField(allow_null=True, help_text="shown with the sides")
    score_b = serializers.FloatField(allow_null=True)


class ReviewPromptPageSerializer(serializers.Serializer):
    results = ReviewPromptSerializer(many=True)
    next = serializers.URLField(allow_null=True)
    total = serializers.IntegerField()


class ReviewDeltaSerializer(serializers.Serializer):
    suite = serializers.CharField()
    task = serializers.CharField()
    metric = serializers.CharField()
    challenger = serializers.FloatField()
    champion = serializers.FloatField()
    delta = serializers.FloatField(help_text="challenger - champion")


class ReviewFlipSerializer(serializers.Serializer):
    task = serializers.CharField()
    row = serializers.IntegerField()
    kind = serializers.CharField(help_text="right_to_wrong or wrong_to_right")


class ReviewFlipsSerializer(serializers.Serializer):
    right_to_wrong = serializers.IntegerField(help_text="the champion was right, the challenger is wrong")
    wrong_to_right = serializers.IntegerField()
    rows = ReviewFlipSerializer(many=True, help_text="those whose sides you may see")
    hidden = serializers.IntegerField(help_text="flips on prompts you have not voted on yet")


class ReviewJudgeSerializer(serializers.Serializer):
    suite = serializers.CharField()
    task = serializers.CharField()
    of_task = serializers.CharField()
    job = serializers.IntegerField()
    pairs = serializers.IntegerField()
    judge_win_rate = serializers.FloatField(allow_null=True)
    compared = serializers.IntegerField(help_text="human votes on rows the judge judged")
    agreed = serializers.IntegerField()
    agreement = serializers.FloatField(allow_null=True)


class ReviewSerializer(serializers.Serializer):
    promotion = serializers.IntegerField()
    status = serializers.CharField()
    challenger = ReviewVersionSerializer()
    champion = ReviewVersionSerializer(allow_null=True)
    can_vote = serializers.BooleanField()
    why_not = serializers.CharField(help_text="why you cannot vote; empty when you can")
    tally = ReviewTallySerializer()
    deltas = ReviewDeltaSerializer(many=True)
    flips = ReviewFlipsSerializer()
    judges = ReviewJudgeSerializer(many=True)
    notes = serializers.ListField(child=serializers.CharField())
    prompts = ReviewPromptPageSerializer()


class ReviewVoteSerializer(serializers.Serializer):
    task = serializers.CharField()
    row = serializers.IntegerField()
    voter = serializers.CharField(source="voter.username")
    vote = serializers.CharField(help_text="a, b or tie")
    challenger_side = serializers.ChoiceField(choices=["a", "b"])
    verdict = serializers.SerializerMethodField(help_text="the vote in the challenger's terms")
    at = serializers.DateTimeField()

    def get_verdict(self, vote: Any) -> str:
        return review_tally.vote_verdict(vote=vote.vote, challenger_side=vote.challenger_side)


class ReviewVoteRequest(RequestModel):
    """A blind vote on one prompt: the side whose answer is better, or a tie."""

    task: str = Field(min_length=1, max_length=100)
    row: Annotated[Whole, Field(ge=0, le=10**9)]
    vote: Vote


def _version(version: Any) -> dict[str, Any] | None:
    return None if version is None else ReviewVersionSerializer(version).data


def _prompts_page(request: Request, context: review.ReviewContext, limit: int) -> dict[str, Any]:
    next_url = None
    if context.next_offset is not None:
        query = request.query_params.copy()
        query["cursor"] = str(context.next_offset)
        query["limit"] = str(limit)
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return {"results": [p.as_dict() for p in context.prompts], "next": next_url, "total": context.total}


def _whole_param(request: Request, name: str, default: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) < 10) or int(raw) > high:
        raise ValidationFailed(f"{name}: must be a whole number from 0 to {high}.")
    return int(raw)


class ReviewApi(APIView):
    @extend_schema(
        operation_id="api_v1_promotions_review_retrieve",
        parameters=[
            OpenApiParameter(
                "cursor", int, description="the `next` of the previous page of prompts carries it"
            ),
            OpenApiParameter("limit", int, description=f"prompts per page, 1 to {MAX_LIMIT} (default 100)"),
        ],
        responses={200: ReviewSerializer, **ERRORS},
    )
    def get(self, request: AuthenticatedRequest, promotion_id: int) -> Response:
        """The review as you may see it: prompts with answers A and B (the challenger's side shown
        once you voted on it, or once the promotion is decided), the tally, flips, metric deltas
        and the judge's agreement with the votes."""
        promotion = promotion_get(user=request.user, promotion_id=promotion_id)
        offset = _whole_param(request, "cursor", 0, 10**9)
        limit = _whole_param(request, "limit", 100, MAX_LIMIT)
        if limit < 1:
            raise ValidationFailed(f"limit: must be between 1 and {MAX_LIMIT}.")
        context = review.review_build(promotion=promotion, user=request.user, offset=offset, limit=limit)
        source = context.source
        return Response(
            {
                "promotion": promotion.pk,
                "status": promotion.status,
                "challenger": _version(source.challenger),
                "champion": _version(source.champion),
                "can_vote": context.can_vote,
                "why_not": context.refusal,
                "tally": context.tally.as_dict(),
                "deltas": [
                    {
                        "suite": d.suite,
                        "task": d.task,
                        "metric": d.metric,
                        "challenger": d.challenger,
                        "champion": d.champion,
                        "delta": d.delta,
                    }
                    for d in source.deltas
                ],
                "flips": {
                    "right_to_wrong": context.right_to_wrong,
                    "wrong_to_right": context.wrong_to_right,
                    "rows": [{"task": f.task, "row": f.row, "kind": f.kind} for f in context.flips],
                    "hidden": context.hidden_flips,
                },
                "judges": [
                    {
                        "suite": j.suite,
                        "task": j.task,
                        "of_task": j.of_task,
                        "job": j.job_id,
                        "pairs": j.pairs,
                        "judge_win_rate": j.tally.win_rate,
                        "compared": j.compared,
                        "agreed": j.agreed,
                        "agreement": j.rate,
                    }
                    for j in context.judges
                ],
                "notes": source.notes,
                "prompts": _prompts_page(request, context, limit),
            }
        )


class VotesCsvRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(review.EXPORT_COLUMNS)
        for row in data if isinstance(data, list) else []:
            writer.writerow([_cell(row[c]) for c in review.EXPORT_COLUMNS])
        return out.getvalue().encode()


def _cell(value: Any) -> Any:
    # A voter's name a spreadsheet would run as a formula stays text.
    text = str(value)
    return "'" + text if isinstance(value, str) and text[:1] in ("=", "+", "-", "@") else value


class ReviewVoteListApi(APIView):
    def get_renderers(self) -> list[BaseRenderer]:
        # CSV is the export's (GET) only: a vote is answered in JSON.
        request = getattr(self, "request", None)
        if request is not None and request.method == "GET":
            return [JSONRenderer(), VotesCsvRenderer()]
        return [JSONRenderer()]

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        wanted = request.query_params.get("format")
        if wanted not in (None, "json", "csv"):
            raise ValidationFailed("format: must be json or csv.")
        return super().perform_content_negotiation(request, force)

    def handle_exception(self, exc: Exception) -> Response:
        # A refusal is always the API's JSON error, even to a request for CSV.
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)

    @extend_schema(
        operation_id="api_v1_promotions_review_votes_list",
        parameters=[
            OpenApiParameter("format", str, enum=["json", "csv"], description="csv: every vote, as a file"),
            *PAGE,
        ],
        responses={
            (200, "application/json"): results_of(ReviewVoteSerializer),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="every vote, one a line"),
            (400, "application/json"): ErrorSerializer,
            (403, "application/json"): ErrorSerializer,
            (404, "application/json"): ErrorSerializer,
        },
    )
    def get(self, request: AuthenticatedRequest, promotion_id: int) -> Response:
        """The votes, for export: everyone's once the promotion is decided; while it is open, only
        your own (anyone else's would tell you the sides of prompts you have not voted on)."""
        promotion = promotion_get(user=request.user, promotion_id=promotion_id)
        votes = review.vote_export_rows(promotion=promotion, user=request.user)
        if request.accepted_renderer.format == "csv":
            rows = [review.vote_export_row(v) for v in votes.order_by("task", "row", "at", "pk")]
            filename = f"promotion-{promotion.pk}-review-votes.csv"
            return Response(rows, headers={"Content-Disposition": f'attachment; filename="{filename}"'})
        return Response(
            page_answer(
                request, votes, lambda page: ReviewVoteSerializer(page, many=True).data, newest_first=False
            )
        )

    @extend_schema(
        request=ReviewVoteRequest,
        responses={
            201: OpenApiResponse(
                ReviewVoteSerializer, description="Counted: the vote, with the sides shown."
            ),
            **ERRORS,
            409: ErrorSerializer,
        },
    )
    def post(self, request: AuthenticatedRequest, promotion_id: int) -> Response:
        """Vote on one prompt (approvers other than the requester, while the promotion is requested).
        A vote is final: voting again on the same prompt is a 409 and changes nothing."""
        promotion = promotion_get(user=request.user, promotion_id=promotion_id)
        body = body_parse(request, ReviewVoteRequest)
        vote = review.review_vote_cast(
            promotion=promotion, user=request.user, task=body.task, row=body.row, vote=body.vote
        )
        return Response(ReviewVoteSerializer(vote).data, status=status.HTTP_201_CREATED)
