"""The datasets app's configuration."""

from __future__ import annotations

from django.apps import AppConfig


class DatasetsConfig(AppConfig):
    name = "controlplane.datasets"
    label = "datasets"
