"""The evidence app's URLs, gathered here: the API's (under /api/v1/) and the pages'.

Each part keeps its own block below.
"""

from __future__ import annotations

from django.urls import URLPattern

api_urlpatterns: list[URLPattern] = [
    # suites and suite runs
    # gates
    # blind review
    # model cards
]

page_urlpatterns: list[URLPattern] = [
    # suites and suite runs
    # gates
    # registered model, version and promotion pages
    # blind review
    # model cards
]
