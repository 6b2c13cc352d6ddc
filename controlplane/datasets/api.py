"""REST endpoints of datasets: versions, their rows and operations, uploads whole or in pieces."""

from __future__ import annotations

import uuid

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.accounts.api import ERRORS, ErrorSerializer, results_of
from controlplane.accounts.models import Role
from controlplane.accounts.requests import AuthenticatedRequest
from controlplane.api_common import body_parse, project_from_request, query_parse, request_body
from controlplane.datasets import selectors, services
from controlplane.datasets.inputs import (
    IngestRequest,
    OperationRequest,
    RowsQuery,
    UploadBeginRequest,
    UploadFinishRequest,
    form_fields,
    upload_file,
)
from controlplane.datasets.models import ChunkedUpload, DatasetOperation, OperationStatus
from controlplane.datasets.preview import version_rows
from controlplane.datasets.services import uploads
from controlplane.errors import ValidationFailed, pydantic_parse
from controlplane.paging import PARAMETERS as PAGE
from controlplane.paging import page_answer


class DatasetVersionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.CharField(source="dataset.project.slug")
    name = serializers.CharField(source="dataset.name")
    version = serializers.IntegerField()
    format = serializers.CharField()
    source_format = serializers.CharField()
    sha256 = serializers.CharField()
    uri = serializers.CharField()
    filename = serializers.CharField()
    row_count = serializers.IntegerField()
    size_bytes = serializers.IntegerField()
    created_by = serializers.CharField(source="created_by.username")
    created_at = serializers.DateTimeField()


class DatasetVersionDetailSerializer(DatasetVersionSerializer):
    stats = serializers.JSONField()
    # DRF's metaclass takes declared fields off the class, so this never shadows Field.parent;
    # the stubs see only the class attribute.
    parent = serializers.IntegerField(source="parent_id", allow_null=True)  # type: ignore[assignment]
    derivation = serializers.JSONField()


class DatasetOperationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.CharField(source="project.slug")
    kind = serializers.CharField()
    name = serializers.CharField()
    source_version = serializers.IntegerField(source="source_version_id", allow_null=True)
    options = serializers.JSONField()
    result = serializers.JSONField()
    filename = serializers.CharField()
    size_bytes = serializers.IntegerField()
    schema = serializers.CharField()
    status = serializers.CharField()
    progress = serializers.FloatField()
    message = serializers.CharField()
    report = serializers.JSONField()
    dataset_version = serializers.IntegerField(source="version_id", allow_null=True)
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


# What an upload answers, whole or in pieces.
INGESTED = {
    201: OpenApiResponse(
        DatasetVersionSerializer,
        description="A small file: stored, as this version (its URL in the Location header).",
    ),
    202: OpenApiResponse(
        DatasetOperationSerializer,
        description="A large file: the ingest operation to poll (its URL in the Location header); "
        "its dataset_version is set when it succeeds.",
    ),
    **ERRORS,
}


class DatasetVersionListApi(APIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        operation_id="api_v1_datasets_list",
        parameters=[OpenApiParameter("project", str, required=True), *PAGE],
        responses={200: results_of(DatasetVersionSerializer), **ERRORS},
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        project = project_from_request(request)
        versions = selectors.dataset_version_list(project=project)
        return Response(
            page_answer(request, versions, lambda rows: DatasetVersionSerializer(rows, many=True).data)
        )

    @extend_schema(request={"multipart/form-data": IngestRequest}, responses=INGESTED)
    def post(self, request: AuthenticatedRequest) -> Response:
        """A small file answers 201 with its version; a large one 202 with the operation to follow."""
        project = project_from_request(request, role=Role.MEMBER)
        # Django reads the form past a charset it does not know; the ingest must not.
        services.upload_charset_check((request.content_params or {}).get("charset"))
        upload = upload_file(request.FILES)
        if upload is None:
            raise ValidationFailed("Attach the dataset file as the 'file' field.")
        body = ingest_request_parse(request, IngestRequest)
        operation = services.dataset_ingest_create(
            project=project,
            user=request.user,
            name=body.name,
            upload=upload,
            schema=body.schema_,
            mapping=body.mapping,
            tokenizer=body.tokenizer,
            max_tokens=body.max_tokens,
        )
        return _ingest_response(operation)


def ingest_request_parse(request: Request, model: type[IngestRequest]) -> IngestRequest:
    """An upload's settings: its form fields or JSON body, the file part aside."""
    return pydantic_parse(model, form_fields(request_body(request), leave_out=("file",)))


def _ingest_response(operation: DatasetOperation) -> Response:
    """A small file answers 201 with its version (or its failure); a large one 202 with the operation."""
    if operation.status == OperationStatus.QUEUED:
        return Response(
            DatasetOperationSerializer(operation).data,
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": reverse("api-dataset-operation", args=[operation.pk])},
        )
    version = services.dataset_operation_version(operation)
    return Response(
        DatasetVersionSerializer(version).data,
        status=status.HTTP_201_CREATED,
        headers={"Location": reverse("api-dataset", args=[version.pk])},
    )


class DatasetVersionDetailApi(APIView):
    @extend_schema(responses={200: DatasetVersionDetailSerializer, **ERRORS})
    def get(self, request: AuthenticatedRequest, version_id: int) -> Response:
        version = selectors.dataset_version_get(user=request.user, version_id=version_id)
        return Response(DatasetVersionDetailSerializer(version).data)


class DatasetVersionRowsApi(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("offset", int), OpenApiParameter("limit", int)],
        responses={
            200: inline_serializer(
                "DatasetRows",
                fields={
                    "offset": serializers.IntegerField(),
                    "rows": serializers.ListField(child=serializers.DictField()),
                },
            ),
            **ERRORS,
            503: ErrorSerializer,
        },
    )
    def get(self, request: AuthenticatedRequest, version_id: int) -> Response:
        version = selectors.dataset_version_get(user=request.user, version_id=version_id)
        query = query_parse(request, RowsQuery)
        rows = version_rows(version=version, offset=query.offset, limit=query.limit)
        return Response({"offset": query.offset, "rows": rows})


class DatasetVersionOperationsApi(APIView):
    """Start dedup, a split, a contamination check or a PII scan; answers 202 with the operation."""

    @extend_schema(request=OperationRequest, responses={202: DatasetOperationSerializer, **ERRORS})
    def post(self, request: AuthenticatedRequest, version_id: int) -> Response:
        version = selectors.dataset_version_get(user=request.user, version_id=version_id)
        options = body_parse(request, OperationRequest).root
        operation = services.dataset_operation_start(version=version, user=request.user, options=options)
        return Response(DatasetOperationSerializer(operation).data, status=status.HTTP_202_ACCEPTED)


class DatasetOperationDetailApi(APIView):
    @extend_schema(responses={200: DatasetOperationSerializer, **ERRORS})
    def get(self, request: AuthenticatedRequest, operation_id: int) -> Response:
        operation = selectors.dataset_operation_get(user=request.user, operation_id=operation_id)
        return Response(DatasetOperationSerializer(operation).data)


class ChunkedUploadSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    project = serializers.CharField(source="project.slug")
    filename = serializers.CharField()
    size = serializers.IntegerField(source="size_bytes")
    offset = serializers.IntegerField(source="received_bytes")
    operation = serializers.IntegerField(source="operation_id", allow_null=True)


# The offset is also a header, for tus clients.
UPLOAD_OFFSET = OpenApiParameter(
    "Upload-Offset",
    int,
    OpenApiParameter.HEADER,
    response=[status.HTTP_200_OK, status.HTTP_201_CREATED],
    description="the bytes the server holds",
)


def _upload_answer(upload: ChunkedUpload, code: int = status.HTTP_200_OK) -> Response:
    # The offset also goes in the header a tus client reads.
    headers = {"Upload-Offset": str(upload.received_bytes)}
    return Response(ChunkedUploadSerializer(upload).data, status=code, headers=headers)


class ChunkedUploadListApi(APIView):
    """Begin a resumable upload: ``{"project", "filename", "size"}``; answers 201 with its id and offset 0."""

    @extend_schema(
        request=UploadBeginRequest,
        parameters=[UPLOAD_OFFSET],
        responses={201: ChunkedUploadSerializer, **ERRORS},
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        project = project_from_request(request, role=Role.MEMBER)
        body = body_parse(request, UploadBeginRequest)
        upload = uploads.upload_begin(
            project=project, user=request.user, filename=body.filename, size=body.size
        )
        return _upload_answer(upload, status.HTTP_201_CREATED)


class ChunkedUploadDetailApi(APIView):
    """GET: how many bytes the server holds. PATCH: the next piece, from the ``Upload-Offset`` header."""

    @extend_schema(parameters=[UPLOAD_OFFSET], responses={200: ChunkedUploadSerializer, **ERRORS})
    def get(self, request: AuthenticatedRequest, upload_id: uuid.UUID) -> Response:
        return _upload_answer(uploads.upload_get(user=request.user, upload_id=upload_id))

    @extend_schema(
        request={"application/offset+octet-stream": OpenApiTypes.BINARY},
        parameters=[
            OpenApiParameter(
                "Upload-Offset",
                int,
                OpenApiParameter.HEADER,
                required=True,
                description="where this piece starts: the offset the server holds",
            ),
            UPLOAD_OFFSET,
        ],
        responses={200: ChunkedUploadSerializer, **ERRORS, 409: ErrorSerializer},
    )
    def patch(self, request: AuthenticatedRequest, upload_id: uuid.UUID) -> Response:
        upload = uploads.upload_append(
            user=request.user,
            upload_id=upload_id,
            offset=_header_int(request.headers.get("Upload-Offset")),
            length=_header_int(request.META.get("CONTENT_LENGTH")),
            stream=request.stream,
        )
        return _upload_answer(upload)


class ChunkedUploadFinishApi(APIView):
    """Every byte is in: ingest the file as a one-piece upload would be (201 or 202)."""

    @extend_schema(request=UploadFinishRequest, responses={**INGESTED, 409: ErrorSerializer})
    def post(self, request: AuthenticatedRequest, upload_id: uuid.UUID) -> Response:
        body = ingest_request_parse(request, UploadFinishRequest)
        operation = uploads.upload_finish(
            user=request.user,
            upload_id=upload_id,
            name=body.name,
            schema=body.schema_,
            mapping=body.mapping,
            tokenizer=body.tokenizer,
            max_tokens=body.max_tokens,
        )
        return _ingest_response(operation)


def _header_int(raw: str | None) -> int | None:
    """A header's whole number, or None when it is absent or not one."""
    if raw and raw.isascii() and raw.isdigit() and len(raw) < 19:
        return int(raw)
    return None
