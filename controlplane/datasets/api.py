from __future__ import annotations

from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.accounts.models import Role
from controlplane.api_common import project_from_request, request_body
from controlplane.datasets import selectors, services
from controlplane.errors import ValidationFailed


class DatasetVersionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.CharField(source="dataset.project.slug")
    name = serializers.CharField(source="dataset.name")
    version = serializers.IntegerField()
    format = serializers.CharField()
    sha256 = serializers.CharField()
    uri = serializers.CharField()
    filename = serializers.CharField()
    row_count = serializers.IntegerField()
    size_bytes = serializers.IntegerField()
    created_by = serializers.CharField(source="created_by.username")
    created_at = serializers.DateTimeField()


class DatasetVersionListApi(APIView):
    parser_classes = [MultiPartParser, FormParser]

    def get(self, request: Request) -> Response:
        project = project_from_request(request)
        versions = selectors.dataset_version_list(project=project)
        return Response({"results": DatasetVersionSerializer(versions, many=True).data})

    def post(self, request: Request) -> Response:
        project = project_from_request(request, role=Role.MEMBER)
        upload = request.FILES.get("file")
        if upload is None:
            raise ValidationFailed("Attach the JSONL file as the 'file' field.")
        version = services.dataset_version_create(
            project=project, user=request.user, name=request_body(request).get("name", ""), upload=upload
        )
        return Response(DatasetVersionSerializer(version).data, status=status.HTTP_201_CREATED)


class DatasetVersionDetailApi(APIView):
    def get(self, request: Request, version_id: int) -> Response:
        version = selectors.dataset_version_get(user=request.user, version_id=version_id)
        return Response(DatasetVersionSerializer(version).data)
