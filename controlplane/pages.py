"""The URLs of the server-rendered pages."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from controlplane.accounts import views as account_views
from controlplane.dashboards import views as dashboard_views
from controlplane.datasets import views as dataset_views
from controlplane.experiments import compare as compare_views
from controlplane.experiments import views as experiment_views
from controlplane.registry import views as registry_views
from controlplane.site import views as site_views
from controlplane.sweeps import views as sweep_views
from controlplane.training import views as training_views
from controlplane.webhooks import views as webhook_views

urlpatterns = [
    path("", site_views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(template_name="login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/tokens", account_views.token_list, name="account-tokens"),
    path("p/<slug:slug>/", site_views.project_overview, name="project"),
    path("p/<slug:slug>/dashboard", dashboard_views.project_dashboard, name="project-dashboard"),
    path("dashboard/", dashboard_views.organisation_dashboard, name="dashboard"),
    path("p/<slug:slug>/datasets", site_views.project_datasets, name="project-datasets"),
    path("p/<slug:slug>/models", site_views.project_models, name="project-models"),
    path("p/<slug:slug>/sweeps", site_views.project_sweeps, name="project-sweeps"),
    path("p/<slug:slug>/settings", site_views.project_settings, name="project-settings"),
    path("favicon.ico", site_views.favicon, name="favicon"),
    path("p/<slug:slug>/runs", experiment_views.project_runs, name="project-runs"),
    path("runs/", experiment_views.all_runs, name="runs"),
    path("runs/bulk", experiment_views.runs_bulk, name="runs-bulk"),
    path("workers/", training_views.worker_list, name="workers"),
    path("p/<slug:slug>/pause", training_views.project_dispatch, {"paused": True}, name="project-pause"),
    path("p/<slug:slug>/resume", training_views.project_dispatch, {"paused": False}, name="project-resume"),
    path("p/<slug:slug>/datasets/upload", dataset_views.dataset_upload, name="dataset-upload"),
    path("dataset-operations/<int:operation_id>/", dataset_views.operation_detail, name="dataset-operation"),
    path(
        "dataset-operations/<int:operation_id>/live",
        dataset_views.operation_live,
        name="dataset-operation-live",
    ),
    path("datasets/<int:version_id>/", site_views.version_detail, name="dataset-version"),
    path(
        "datasets/<int:version_id>/operations",
        dataset_views.version_operation_start,
        name="dataset-version-operation",
    ),
    path("p/<slug:slug>/jobs/new", training_views.job_new, name="job-new"),
    path("p/<slug:slug>/jobs/evaluate", training_views.evaluate_new, name="evaluate-new"),
    path("p/<slug:slug>/jobs/estimate", training_views.job_estimate, name="job-estimate"),
    path("p/<slug:slug>/sweeps/new", sweep_views.sweep_new, name="sweep-new"),
    path("sweeps/<int:sweep_id>/", sweep_views.sweep_detail, name="sweep"),
    path("sweeps/<int:sweep_id>/live", sweep_views.sweep_live, name="sweep-live"),
    *(
        path(
            f"sweeps/<int:sweep_id>/{action}",
            sweep_views.sweep_action,
            {"action": action},
            name=f"sweep-{action}",
        )
        for action in ("pause", "resume", "stop", "add-trials", "rerun-failed")
    ),
    path("compare/", compare_views.compare, name="compare"),
    path("p/<slug:slug>/webhooks", webhook_views.webhook_list, name="project-webhooks"),
    *(
        path(
            f"webhooks/<int:webhook_id>/{action}",
            webhook_views.webhook_action,
            {"action": action},
            name=f"webhook-{action}",
        )
        for action in ("rotate", "enable", "disable", "delete")
    ),
    path(
        "webhook-deliveries/<int:delivery_id>/redeliver",
        webhook_views.delivery_redeliver,
        name="webhook-redeliver",
    ),
    path("jobs/<int:job_id>/", training_views.job_detail, name="job"),
    path("jobs/<int:job_id>/live", training_views.job_live, name="job-live"),
    path("jobs/<int:job_id>/cancel", training_views.job_cancel, name="job-cancel"),
    path("jobs/<int:job_id>/retry", training_views.job_retry, name="job-retry"),
    path("jobs/<int:job_id>/clone", training_views.job_clone, name="job-clone"),
    path("jobs/<int:job_id>/register", registry_views.model_version_register, name="job-register"),
    path("model-versions/<int:version_id>/promote", registry_views.promotion_request, name="promote"),
    path(
        "promotions/<int:promotion_id>/approve",
        registry_views.promotion_approve,
        name="promotion-approve",
    ),
    path(
        "promotions/<int:promotion_id>/reject",
        registry_views.promotion_reject,
        name="promotion-reject",
    ),
    path(
        "promotions/<int:promotion_id>/withdraw",
        registry_views.promotion_withdraw,
        name="promotion-withdraw",
    ),
    path(
        "promotions/<int:promotion_id>/comments",
        registry_views.promotion_comment,
        name="promotion-comment",
    ),
    path("rollbacks", registry_views.rollback, name="rollback"),
]
