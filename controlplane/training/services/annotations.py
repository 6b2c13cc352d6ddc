"""What people write on runs: tags and notes (members of the job's project)."""

from __future__ import annotations

import re

from django.db import transaction

from controlplane.accounts.models import Role, User
from controlplane.accounts.selectors import project_role_check
from controlplane.errors import ValidationFailed
from controlplane.training.models import Job, JobTag

TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
MAX_TAGS = 20


def tag_name_check(name: str) -> str:
    """A tag as stored: 1 to 64 letters, digits, ``_ . : -``, starting with a letter or digit."""
    name = name.strip()
    if not TAG.fullmatch(name):
        raise ValidationFailed(
            f"tags: {name[:70]!r} is not a tag (1 to 64 letters, digits, '_', '.', ':' or '-')."
        )
    return name


def job_annotate(*, job: Job, user: User, tags: list[str] | None = None, notes: str | None = None) -> Job:
    """Set a job's tags (the whole list) and/or notes; None leaves that part as it is."""
    project_role_check(user=user, project=job.project, role=Role.MEMBER)
    names = sorted({tag_name_check(name) for name in tags}) if tags is not None else None
    if names is not None and len(names) > MAX_TAGS:
        raise ValidationFailed(f"tags: at most {MAX_TAGS} tags on a job.")
    with transaction.atomic():
        if notes is not None:
            Job.objects.filter(pk=job.pk).update(notes=notes)
            job.notes = notes
        if names is not None:
            JobTag.objects.filter(job=job).exclude(name__in=names).delete()
            JobTag.objects.bulk_create(
                [JobTag(job=job, project_id=job.project_id, name=name) for name in names],
                ignore_conflicts=True,
            )
    return job


def jobs_tag(*, jobs: list[Job], user: User, tag: str) -> int:
    """Add ``tag`` to each job (of projects where ``user`` is a member); how many were tagged.

    The caller chose the jobs among those the person can see; a job of a
    project where they only view refuses the whole request, before any write.
    """
    name = tag_name_check(tag)
    for project in {job.project_id: job.project for job in jobs}.values():
        project_role_check(user=user, project=project, role=Role.MEMBER)
    JobTag.objects.bulk_create(
        [JobTag(job=job, project_id=job.project_id, name=name) for job in jobs], ignore_conflicts=True
    )
    return len(jobs)
