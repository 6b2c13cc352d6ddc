"""The dashboards app's configuration; it registers with training's hooks when ready."""

from __future__ import annotations

from django.apps import AppConfig


class DashboardsConfig(AppConfig):
    """What a manager reads: queue, usage and cost, success, leaderboards, promotions, worker use."""

    name = "controlplane.dashboards"
    label = "dashboards"

    def ready(self) -> None:
        # The pre-aggregates fill as jobs end and workers beat; training never imports us.
        from controlplane.dashboards import services
        from controlplane.training import hooks

        hooks.on_job_finished(services.job_finished_heard)
        hooks.on_worker_heartbeat(services.worker_heartbeat_heard)
