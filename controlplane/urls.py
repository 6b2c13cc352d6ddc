"""The URL map: the admin, the REST API (/api/v1/), the workers' internal API (/internal/v1/), the pages."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from controlplane import openapi  # noqa: F401  (the schema's authenticators)
from controlplane.accounts.api import ApiTokenListApi, ApiTokenRevokeApi, ProjectListApi, TokenObtainApi
from controlplane.datasets.api import (
    ChunkedUploadDetailApi,
    ChunkedUploadFinishApi,
    ChunkedUploadListApi,
    DatasetOperationDetailApi,
    DatasetVersionDetailApi,
    DatasetVersionListApi,
    DatasetVersionOperationsApi,
    DatasetVersionRowsApi,
)
from controlplane.evidence import urls as evidence_urls
from controlplane.mlflow_gate.views import gate as mlflow_gate
from controlplane.registry.api import (
    DeploymentHistoryApi,
    DeploymentListApi,
    ModelVersionDetailApi,
    ModelVersionListApi,
    PromotionApproveApi,
    PromotionCommentListApi,
    PromotionDetailApi,
    PromotionListApi,
    PromotionRejectApi,
    PromotionWithdrawApi,
    RollbackListApi,
)
from controlplane.sweeps.api import SweepActionApi, SweepDetailApi, SweepListApi, SweepTrialReportApi
from controlplane.training.api import (
    BaseModelListApi,
    JobCancelApi,
    JobClaimApi,
    JobCloneApi,
    JobDetailApi,
    JobEstimateApi,
    JobFinishApi,
    JobHeartbeatApi,
    JobListApi,
    JobLogsApi,
    JobMetricsApi,
    JobRetryApi,
    ProjectDispatchApi,
    UsageApi,
    WorkerHeartbeatApi,
    WorkerListApi,
)
from controlplane.webhooks.api import (
    WebhookDeliveryDetailApi,
    WebhookDeliveryListApi,
    WebhookDetailApi,
    WebhookListApi,
    WebhookRedeliverApi,
    WebhookSecretRotateApi,
)

api_v1 = [
    path("auth/token", TokenObtainApi.as_view(), name="api-token"),
    path("tokens", ApiTokenListApi.as_view(), name="api-tokens"),
    path("tokens/<int:token_id>/revoke", ApiTokenRevokeApi.as_view(), name="api-token-revoke"),
    path("projects", ProjectListApi.as_view(), name="api-projects"),
    path("projects/<str:slug>/pause", ProjectDispatchApi.as_view(paused=True), name="api-project-pause"),
    path("projects/<str:slug>/resume", ProjectDispatchApi.as_view(paused=False), name="api-project-resume"),
    path("datasets", DatasetVersionListApi.as_view(), name="api-datasets"),
    path("datasets/<int:version_id>", DatasetVersionDetailApi.as_view(), name="api-dataset"),
    path("datasets/<int:version_id>/rows", DatasetVersionRowsApi.as_view(), name="api-dataset-rows"),
    path(
        "datasets/<int:version_id>/operations",
        DatasetVersionOperationsApi.as_view(),
        name="api-dataset-operations",
    ),
    path(
        "dataset-operations/<int:operation_id>",
        DatasetOperationDetailApi.as_view(),
        name="api-dataset-operation",
    ),
    path("uploads", ChunkedUploadListApi.as_view(), name="api-uploads"),
    path("uploads/<uuid:upload_id>", ChunkedUploadDetailApi.as_view(), name="api-upload"),
    path("uploads/<uuid:upload_id>/finish", ChunkedUploadFinishApi.as_view(), name="api-upload-finish"),
    path("base-models", BaseModelListApi.as_view(), name="api-base-models"),
    path("jobs", JobListApi.as_view(), name="api-jobs"),
    path("jobs/estimate", JobEstimateApi.as_view(), name="api-job-estimate"),
    path("jobs/<int:job_id>", JobDetailApi.as_view(), name="api-job"),
    path("jobs/<int:job_id>/cancel", JobCancelApi.as_view(), name="api-job-cancel"),
    path("jobs/<int:job_id>/retry", JobRetryApi.as_view(), name="api-job-retry"),
    path("jobs/<int:job_id>/clone", JobCloneApi.as_view(), name="api-job-clone"),
    path("jobs/<int:job_id>/metrics", JobMetricsApi.as_view(), name="api-job-metrics"),
    path("jobs/<int:job_id>/logs", JobLogsApi.as_view(), name="api-job-logs"),
    path("model-versions", ModelVersionListApi.as_view(), name="api-model-versions"),
    path("model-versions/<int:model_version_id>", ModelVersionDetailApi.as_view(), name="api-model-version"),
    path("promotions", PromotionListApi.as_view(), name="api-promotions"),
    path("promotions/<int:promotion_id>", PromotionDetailApi.as_view(), name="api-promotion"),
    path(
        "promotions/<int:promotion_id>/approve",
        PromotionApproveApi.as_view(),
        name="api-promotion-approve",
    ),
    path(
        "promotions/<int:promotion_id>/reject",
        PromotionRejectApi.as_view(),
        name="api-promotion-reject",
    ),
    path(
        "promotions/<int:promotion_id>/withdraw",
        PromotionWithdrawApi.as_view(),
        name="api-promotion-withdraw",
    ),
    path(
        "promotions/<int:promotion_id>/comments",
        PromotionCommentListApi.as_view(),
        name="api-promotion-comments",
    ),
    path("rollbacks", RollbackListApi.as_view(), name="api-rollbacks"),
    path("deployments/<str:target>", DeploymentListApi.as_view(), name="api-deployments"),
    path(
        "deployments/<str:target>/history",
        DeploymentHistoryApi.as_view(),
        name="api-deployment-history",
    ),
    path("workers", WorkerListApi.as_view(), name="api-workers"),
    path("sweeps", SweepListApi.as_view(), name="api-sweeps"),
    path("sweeps/<int:sweep_id>", SweepDetailApi.as_view(), name="api-sweep"),
    *(
        path(
            f"sweeps/<int:sweep_id>/{action}",
            SweepActionApi.as_view(action=action),
            name=f"api-sweep-{action}",
        )
        for action in ("pause", "resume", "stop", "add-trials", "rerun-failed")
    ),
    path("usage", UsageApi.as_view(), name="api-usage"),
    path("webhooks", WebhookListApi.as_view(), name="api-webhooks"),
    path("webhooks/<int:webhook_id>", WebhookDetailApi.as_view(), name="api-webhook"),
    path(
        "webhooks/<int:webhook_id>/rotate-secret",
        WebhookSecretRotateApi.as_view(),
        name="api-webhook-rotate-secret",
    ),
    path(
        "webhooks/<int:webhook_id>/deliveries",
        WebhookDeliveryListApi.as_view(),
        name="api-webhook-deliveries",
    ),
    path(
        "webhook-deliveries/<int:delivery_id>",
        WebhookDeliveryDetailApi.as_view(),
        name="api-webhook-delivery",
    ),
    path(
        "webhook-deliveries/<int:delivery_id>/redeliver",
        WebhookRedeliverApi.as_view(),
        name="api-webhook-redeliver",
    ),
    path("schema", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its start-up script as a file: the CSP allows no inline script.
    path("docs", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
]

internal_v1 = [
    path("jobs/<int:job_id>/claim", JobClaimApi.as_view(), name="internal-job-claim"),
    path("jobs/<int:job_id>/heartbeat", JobHeartbeatApi.as_view(), name="internal-job-heartbeat"),
    path("jobs/<int:job_id>/finish", JobFinishApi.as_view(), name="internal-job-finish"),
    path("jobs/<int:job_id>/sweep-trials", SweepTrialReportApi.as_view(), name="internal-sweep-trials"),
    path("workers/heartbeat", WorkerHeartbeatApi.as_view(), name="internal-worker-heartbeat"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/v1/", include(evidence_urls.api_urlpatterns)),
    path("internal/v1/", include(internal_v1)),
    # MLflow's UI and API, behind Tuneyard's permissions (controlplane.mlflow_gate).
    re_path(r"^mlflow/?(?P<path>.*)$", mlflow_gate),
    path("", include("controlplane.pages")),
    path("", include(evidence_urls.page_urlpatterns)),
]

# Refusals from Django itself (an unknown URL, a body too large, an uncaught exception): JSON under
# /api/ and /internal/, Django's pages elsewhere.
handler400 = "controlplane.errors.bad_request_answer"
handler403 = "controlplane.errors.permission_denied_answer"
handler404 = "controlplane.errors.not_found_answer"
handler500 = "controlplane.errors.server_error_answer"
