"""The webhooks app's configuration: it listens to the apps below it through their seams."""

from __future__ import annotations

from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    """Signed webhooks (Standard Webhooks): subscriptions, the outbox, deliveries with retries."""

    name = "controlplane.webhooks"
    label = "webhooks"

    def ready(self) -> None:
        from controlplane.registry import hooks as registry_hooks
        from controlplane.training import hooks as training_hooks
        from controlplane.webhooks import listeners

        training_hooks.on_job_finished(listeners.job_finished)
        registry_hooks.on_promotion_changed(listeners.promotion_changed)
