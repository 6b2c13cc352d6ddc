"""Template filters of the dataset pages."""

from __future__ import annotations

from django import template

from controlplane.datasets.preview import cell_preview

register = template.Library()
register.filter("cell_preview", cell_preview)
