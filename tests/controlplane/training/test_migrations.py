"""Data migrations, run on rows as an earlier release stored them."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps

from controlplane.training.models import Job
from tests.factories import job_make

pytestmark = pytest.mark.django_db


def test_jobs_stored_before_completion_only_loss_keep_their_whole_text_loss(people):
    migration = importlib.import_module("controlplane.training.migrations.0008_jobs_keep_their_loss")
    old = job_make(people["demo"], people["alice"])
    config = dict(old.config)
    config["hyperparameters"] = dict(config["hyperparameters"])
    del config["hyperparameters"]["completion_only_loss"]  # as a job stored before the field was
    Job.objects.filter(pk=old.pk).update(config=config)
    new = job_make(people["demo"], people["alice"])

    migration.pin_whole_text_loss(apps, None)

    assert Job.objects.get(pk=old.pk).config["hyperparameters"]["completion_only_loss"] is False
    assert Job.objects.get(pk=new.pk).config["hyperparameters"]["completion_only_loss"] is True
