"""REST endpoints of accounts: the projects the caller belongs to."""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.accounts.models import Membership
from controlplane.accounts.requests import AuthenticatedRequest
from controlplane.accounts.selectors import project_list


class ProjectSerializer(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    role = serializers.CharField()
    dispatch_paused = serializers.BooleanField()


class ProjectListApi(APIView):
    def get(self, request: AuthenticatedRequest) -> Response:
        roles = dict(Membership.objects.filter(user=request.user).values_list("project_id", "role"))
        rows = [
            {"slug": p.slug, "name": p.name, "role": roles[p.pk], "dispatch_paused": p.dispatch_paused}
            for p in project_list(user=request.user)
        ]
        return Response({"results": ProjectSerializer(rows, many=True).data})
