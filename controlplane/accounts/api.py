"""REST endpoints of accounts: the projects the caller belongs to, and the caller's API tokens."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from django.contrib.auth import authenticate
from django.http import QueryDict
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError
from rest_framework import serializers, status
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.accounts import selectors, services
from controlplane.accounts.lockout import login_attempts_reset
from controlplane.accounts.models import TOKEN_NAME_MAX, ApiToken, Membership, TokenScope
from controlplane.accounts.requests import AuthenticatedRequest
from controlplane.accounts.selectors import project_list
from controlplane.errors import ValidationFailed, pydantic_parse
from controlplane.paging import PARAMETERS as PAGE
from controlplane.paging import page_answer


class ErrorSerializer(serializers.Serializer):
    """How every endpoint under /api/ and /internal/ refuses (controlplane.errors)."""

    error = serializers.CharField(help_text="a code: validation_failed, forbidden, not_found, conflict, ...")
    message = serializers.CharField(help_text="one sentence for a person")
    details = serializers.JSONField(required=False, help_text="only where there is more to say")


# The refusals (almost) any endpoint may answer, for its schema.
ERRORS = {code: ErrorSerializer for code in (400, 403, 404)}


def results_of(serializer: type[serializers.Serializer]) -> serializers.Serializer:
    """The schema of a listing: ``{"results": [...], "next": url | null}`` of ``serializer``'s rows."""
    name = serializer.__name__.removesuffix("Serializer")
    return inline_serializer(
        f"{name}List",
        fields={
            "results": serializer(many=True),
            "next": serializers.URLField(allow_null=True, help_text="the next page; null on the last"),
        },
    )


class ProjectSerializer(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    role = serializers.CharField()
    dispatch_paused = serializers.BooleanField()


class ProjectListApi(APIView):
    @extend_schema(
        operation_id="api_v1_projects_list",
        parameters=PAGE,
        responses={200: results_of(ProjectSerializer), 400: ErrorSerializer},
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        roles = dict(Membership.objects.filter(user=request.user).values_list("project_id", "role"))

        def rows(projects: list[Any]) -> Any:
            return ProjectSerializer(
                [
                    {
                        "slug": p.slug,
                        "name": p.name,
                        "role": roles[p.pk],
                        "dispatch_paused": p.dispatch_paused,
                    }
                    for p in projects
                ],
                many=True,
            ).data

        return Response(page_answer(request, project_list(user=request.user), rows, newest_first=False))


# --- API tokens ----------------------------------------------------------------
# The request models are declared here, not with controlplane.api_common's helpers:
# accounts sits below api_common in the layers.


def _scopes(value: Any) -> Any:
    # A JSON list, or form text: "read,write" (a form's repeated fields are joined so before).
    return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


def _days(value: Any) -> Any:
    # A JSON integer or form text ("30"); pydantic alone would also take true as 1 and 30.0 as 30.
    if isinstance(value, bool | float) or (
        isinstance(value, str) and not (value.isascii() and value.isdigit())
    ):
        raise PydanticCustomError("whole_number", "must be a whole number of days")
    return value


Scopes = Annotated[
    list[TokenScope], BeforeValidator(_scopes), Field(min_length=1, max_length=len(TokenScope))
]
Days = Annotated[int, BeforeValidator(_days), Field(ge=1, description="default API_TOKEN_DEFAULT_DAYS (90)")]


class TokenCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(max_length=TOKEN_NAME_MAX, description="what or who uses it")
    scopes: Scopes
    expires_in_days: Days | None = None


class TokenObtainRequest(BaseModel):
    """A username and password for a token; by default one with every scope, as the CLI wants."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str = Field(min_length=1, max_length=150)
    password: str = Field(min_length=1, max_length=1024)
    name: str = Field(default="auth/token", max_length=TOKEN_NAME_MAX)
    scopes: Scopes = Field(default_factory=lambda: list(TokenScope))
    expires_in_days: Days | None = None


def _body(request: Request) -> dict[str, Any]:
    data = request.data
    if isinstance(data, QueryDict):
        fields: dict[str, Any] = data.dict()
        if "scopes" in data:
            fields["scopes"] = ",".join(data.getlist("scopes"))
        return fields
    if not isinstance(data, Mapping):
        raise ValidationFailed("The body must be a JSON object (or form fields).")
    return dict(data)


class ApiTokenSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField(help_text="the secret's first characters")
    scopes = serializers.ListField(child=serializers.CharField())
    state = serializers.CharField(help_text="active, expired or revoked")
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.CharField(help_text="the secret, shown this once: it is not kept")


def _created(token: ApiToken, secret: str) -> dict[str, Any]:
    # The secret is in this answer only: it is not kept.
    return {"token": secret, **ApiTokenSerializer(token).data}


class TokenObtainApi(APIView):
    """``POST auth/token``: a username and password in, ``{"token": ...}`` out (``tuneyard token``).

    Throttled by the login lockout (controlplane.accounts.lockout): too many wrong
    passwords for a username from one address and it answers 429 for a while.
    """

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    def get_authenticate_header(self, request: Request) -> str:
        # With a challenge to name, DRF answers a wrong password 401 (without one, 403).
        return "Token"

    @extend_schema(
        request=TokenObtainRequest,
        responses={
            200: ApiTokenCreatedSerializer,
            400: ErrorSerializer,
            401: OpenApiResponse(ErrorSerializer, description="Wrong username or password."),
            429: OpenApiResponse(ErrorSerializer, description="Too many wrong passwords: wait."),
        },
    )
    def post(self, request: Request) -> Response:
        body = pydantic_parse(TokenObtainRequest, _body(request))
        # The Django request: the lockout counts by its address and flags it for its middleware.
        user = authenticate(request._request, username=body.username, password=body.password)
        if user is None:
            raise AuthenticationFailed("Wrong username or password.")
        login_attempts_reset(request._request, username=body.username)
        token, secret = services.api_token_create(
            user=user, name=body.name, scopes=body.scopes, expires_in_days=body.expires_in_days
        )
        return Response(_created(token, secret))


class ApiTokenListApi(APIView):
    @extend_schema(
        operation_id="api_v1_tokens_list",
        parameters=PAGE,
        responses={200: results_of(ApiTokenSerializer), 400: ErrorSerializer},
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        tokens = selectors.api_token_list(user=request.user)
        return Response(page_answer(request, tokens, lambda rows: ApiTokenSerializer(rows, many=True).data))

    @extend_schema(request=TokenCreateRequest, responses={201: ApiTokenCreatedSerializer, **ERRORS})
    def post(self, request: AuthenticatedRequest) -> Response:
        body = pydantic_parse(TokenCreateRequest, _body(request))
        token, secret = services.api_token_create(
            user=request.user,
            name=body.name,
            scopes=body.scopes,
            expires_in_days=body.expires_in_days,
            issuer=request.auth if isinstance(request.auth, ApiToken) else None,
        )
        return Response(_created(token, secret), status=status.HTTP_201_CREATED)


class ApiTokenRevokeApi(APIView):
    @extend_schema(request=None, responses={200: ApiTokenSerializer, **ERRORS})
    def post(self, request: AuthenticatedRequest, token_id: int) -> Response:
        token = selectors.api_token_get(user=request.user, token_id=token_id)
        return Response(ApiTokenSerializer(services.api_token_revoke(token=token)).data)
