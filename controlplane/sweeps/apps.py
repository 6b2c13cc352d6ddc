"""The sweeps app's configuration; it registers with training's job hooks when ready."""

from __future__ import annotations

from django.apps import AppConfig


class SweepsConfig(AppConfig):
    name = "controlplane.sweeps"
    label = "sweeps"

    def ready(self) -> None:
        # Sweeps hear of their trials' and drivers' jobs through training's hooks;
        # training never imports sweeps.
        from controlplane.sweeps import job_hooks

        job_hooks.register()
