"""The idempotency app's configuration."""

from __future__ import annotations

from django.apps import AppConfig


class IdempotencyConfig(AppConfig):
    name = "controlplane.idempotency"
    label = "idempotency"
