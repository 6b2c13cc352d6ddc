"""The evidence app's URLs, gathered here: the API's (under /api/v1/) and the pages'.

Each part keeps its own block below.
"""

from __future__ import annotations

from django.urls import URLPattern, path

from controlplane.evidence import (
    cards_api,
    cards_views,
    gates_api,
    registry_views,
    review_api,
    review_views,
    suites_api,
    suites_views,
)

api_urlpatterns: list[URLPattern] = [
    # suites and suite runs
    path("suites", suites_api.SuiteListApi.as_view(), name="api-suites"),
    path("suites/<int:suite_id>", suites_api.SuiteDetailApi.as_view(), name="api-suite"),
    path("suites/<int:suite_id>/versions", suites_api.SuiteVersionApi.as_view(), name="api-suite-versions"),
    path("suite-runs", suites_api.SuiteRunListApi.as_view(), name="api-suite-runs"),
    path("suite-runs/<int:suite_run_id>", suites_api.SuiteRunDetailApi.as_view(), name="api-suite-run"),
    path(
        "suite-runs/<int:suite_run_id>/tasks/<str:task>/predictions",
        suites_api.SuiteRunPredictionsApi.as_view(),
        name="api-suite-run-predictions",
    ),
    # gates
    path("gate-policy", gates_api.GatePolicyApi.as_view(), name="api-gate-policy"),
    path(
        "promotions/<int:promotion_id>/gates",
        gates_api.PromotionGateReportApi.as_view(),
        name="api-promotion-gates",
    ),
    path(
        "promotions/<int:promotion_id>/pii-acknowledgement",
        gates_api.PromotionPiiAcknowledgementApi.as_view(),
        name="api-promotion-pii-acknowledgement",
    ),
    # blind review
    path("promotions/<int:promotion_id>/review", review_api.ReviewApi.as_view(), name="api-promotion-review"),
    path(
        "promotions/<int:promotion_id>/review/votes",
        review_api.ReviewVoteListApi.as_view(),
        name="api-promotion-review-votes",
    ),
    # model cards
    path(
        "promotions/<int:promotion_id>/card", cards_api.PromotionCardApi.as_view(), name="api-promotion-card"
    ),
    path("deployments/<str:target>/card", cards_api.DeploymentCardApi.as_view(), name="api-deployment-card"),
]

page_urlpatterns: list[URLPattern] = [
    # suites and suite runs
    path("p/<slug:slug>/models/<slug:name>/suites", suites_views.model_suites, name="model-suites"),
    path("p/<slug:slug>/models/<slug:name>/suites/new", suites_views.suite_new, name="suite-new"),
    path(
        "p/<slug:slug>/suites/<int:suite_id>/versions",
        suites_views.suite_version_new,
        name="suite-version-new",
    ),
    path("p/<slug:slug>/suites/<int:suite_id>/runs", suites_views.suite_run_new, name="suite-run-new"),
    path("p/<slug:slug>/suite-runs/<int:suite_run_id>", suites_views.suite_run_detail, name="suite-run"),
    path(
        "p/<slug:slug>/suite-runs/<int:suite_run_id>/tasks/<str:task>/predictions",
        suites_views.suite_run_predictions,
        name="suite-run-predictions",
    ),
    # gates
    path(
        "p/<slug:slug>/models/<slug:name>/gates/<str:target>",
        suites_views.gate_policy_edit,
        name="gate-policy-edit",
    ),
    # registered model, version and promotion pages
    path("p/<slug:slug>/models/<slug:name>", registry_views.model_detail, name="model"),
    path(
        "p/<slug:slug>/models/<slug:name>/<int:version>",
        registry_views.model_version_detail,
        name="model-version",
    ),
    path("p/<slug:slug>/promotions/<int:promotion_id>", registry_views.promotion_detail, name="promotion"),
    # blind review
    path("promotions/<int:promotion_id>/review", review_views.review_page, name="promotion-review"),
    path(
        "promotions/<int:promotion_id>/review/prompts",
        review_views.review_prompts,
        name="promotion-review-prompts",
    ),
    path("promotions/<int:promotion_id>/review/vote", review_views.review_vote, name="promotion-review-vote"),
    # model cards
    path(
        "p/<slug:slug>/promotions/<int:promotion_id>/card", cards_views.promotion_card, name="promotion-card"
    ),
]
