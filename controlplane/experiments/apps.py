"""The experiments app's configuration."""

from __future__ import annotations

from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    """Runs as a team reads them: the runs table (jobs, evaluations, sweep trials) and the compare view."""

    name = "controlplane.experiments"
    label = "experiments"
