"""The evidence app's configuration: it hears of jobs and promotions through their apps' seams."""

from __future__ import annotations

from django.apps import AppConfig


class EvidenceConfig(AppConfig):
    """What an approver decides on: evaluation suites and their runs, gates, blind review, model cards."""

    name = "controlplane.evidence"
    label = "evidence"

    def ready(self) -> None:
        from controlplane.evidence import listeners

        listeners.register()
