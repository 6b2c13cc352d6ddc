"""Reads that decide what a user may see: everything is scoped by project membership; API tokens."""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.db.models import OuterRef, QuerySet, Subquery

from controlplane.accounts.models import ApiToken, Membership, Project, Role, User
from controlplane.errors import Forbidden, NotFound

# Whoever reads: a signed-in user, or an anonymous visitor, who may see nothing.
Reader = User | AnonymousUser
SLUG = re.compile(r"[-a-zA-Z0-9_]{1,64}")


def project_list(*, user: Reader) -> QuerySet[Project]:
    if not user.is_authenticated:
        return Project.objects.none()
    return Project.objects.filter(memberships__user=user).order_by("slug")


def project_list_readable(*, user: Reader) -> QuerySet[Project]:
    """The projects whose pages the user may read: their own, or every one for a site admin."""
    if user.is_authenticated and user.is_superuser:
        return Project.objects.order_by("slug")
    return project_list(user=user)


def _role_held(user: Reader, role: str | None) -> Role | None:
    if role:
        return Role(role)
    # A site admin reads every project (to help, to audit) but acts only where a member.
    return Role.VIEWER if user.is_superuser else None


def membership_role(*, user: Reader, project: Project) -> Role | None:
    if not user.is_authenticated:
        return None
    # A project loaded by project_get knows its reader's role already: an API
    # call then checks it again in the service for free.
    known = getattr(project, "_member_roles", {})
    if user.pk in known:
        return known[user.pk]
    role = Membership.objects.filter(user=user, project=project).values_list("role", flat=True).first()
    return _role_held(user, role)


def project_role_check(*, user: Reader, project: Project, role: Role) -> Role:
    """The user's role in the project, if it includes ``role``.

    An outsider gets NotFound, not Forbidden: they must not learn what exists.
    """
    held = membership_role(user=user, project=project)
    if held is None:
        raise NotFound("Not found.")
    if not held.includes(role):
        raise Forbidden(f"This needs the {role.value} role in project {project.slug}; you are {held.value}.")
    return held


def project_get(*, user: Reader, slug: str, role: Role = Role.VIEWER) -> Project:
    if not SLUG.fullmatch(slug):
        raise NotFound("Not found.")
    # The project and the reader's role in it, in one query.
    # An anonymous reader's pk is None, which matches no membership.
    member_role = Membership.objects.filter(project=OuterRef("pk"), user=user.pk).values("role")[:1]
    project = Project.objects.filter(slug=slug).annotate(member_role=Subquery(member_role)).first()
    if project is None:
        raise NotFound("Not found.")
    if user.is_authenticated:
        project._member_roles = {user.pk: _role_held(user, project.member_role)}
    project_role_check(user=user, project=project, role=role)
    return project


def api_token_list(*, user: User) -> QuerySet[ApiToken]:
    """The user's own tokens, newest first, the revoked and expired ones included."""
    return ApiToken.objects.filter(user=user).order_by("-created_at", "-pk")


def api_token_get(*, user: User, token_id: int) -> ApiToken:
    """One of the user's own tokens; another's is the same NotFound as a missing one."""
    token = ApiToken.objects.filter(user=user, pk=token_id).first()
    if token is None:
        raise NotFound("No such token of yours.")
    return token


def api_token_find(*, secret: str) -> ApiToken | None:
    """The token whose secret this is (revoked or expired ones too: the caller says which), with its user."""
    return ApiToken.objects.select_related("user").filter(digest=ApiToken.digest_of(secret)).first()


def project_page_context(*, user: User, slug: str) -> dict[str, Any]:
    """A project page's starting context: the project (NotFound unless the user may read it), the
    user's role, and what that role lets the page offer."""
    project = project_get(user=user, slug=slug)
    role = membership_role(user=user, project=project)
    return {
        "project": project,
        "role": role,
        "can_edit": role is not None and role.includes(Role.MEMBER),
        "can_approve": role is not None and role.includes(Role.APPROVER),
        "can_admin": role is not None and role.includes(Role.ADMIN),
    }
