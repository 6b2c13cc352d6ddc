"""The dashboards app's configuration."""

from __future__ import annotations

from django.apps import AppConfig


class DashboardsConfig(AppConfig):
    """What a manager reads: queue, usage and cost, success, leaderboards, promotions, worker use."""

    name = "controlplane.dashboards"
    label = "dashboards"
