"""What the site's navigation (base.html) needs on every page: the reader's projects, for the switcher."""

from __future__ import annotations

from django import template
from django.db.models import QuerySet

from controlplane.accounts.models import Project
from controlplane.accounts.selectors import project_list

register = template.Library()


@register.simple_tag(takes_context=True)
def nav_projects(context: template.Context) -> QuerySet[Project] | list[Project]:
    """The signed-in reader's projects; none for a visitor (the login and error pages)."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return []
    return project_list(user=user).only("slug", "name")
