"""The site app's configuration."""

from __future__ import annotations

from django.apps import AppConfig


class SiteConfig(AppConfig):
    """The top of the house: what composes the apps into one product (pages that span apps, the demo)."""

    name = "controlplane.site"
    label = "site"
