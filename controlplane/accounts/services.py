"""Every write to accounts: creating projects and adding members."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction

from controlplane.accounts.models import Membership, Project, Role, User


@transaction.atomic
def project_create(*, slug: str, name: str) -> Project:
    project, _ = Project.objects.get_or_create(slug=slug, defaults={"name": name})
    return project


@transaction.atomic
def member_add(*, project: Project, username: str, role: Role, password: str | None = None) -> User:
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=username)
    if created and password:
        user.set_password(password)
        user.save(update_fields=["password"])
    Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
    return user
