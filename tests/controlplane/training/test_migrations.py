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


def test_a_ray_sweeps_driver_stored_as_a_finetune_becomes_a_sweep_driver_job(people):
    from controlplane.sweeps.models import Sweep
    from tests.factories import FACTORY_QUEUE

    migration = importlib.import_module("controlplane.sweeps.migrations.0003_driver_jobs_have_their_kind")
    driver, plain = (job_make(people["demo"], people["alice"]) for _ in range(2))
    Sweep.objects.create(
        project=people["demo"], name="s", created_by=people["alice"], base_model=driver.base_model,
        dataset_version=driver.dataset_version, base_config={"resources": {"queue": FACTORY_QUEUE}},
        search_space={}, n_trials=1, study_name="s-0003", backend="ray", driver_job=driver,
    )  # fmt: skip
    assert Job.objects.get(pk=driver.pk).kind == "finetune"  # as an earlier release stored it

    migration.driver_jobs_kind(apps, None)

    assert Job.objects.get(pk=driver.pk).kind == "sweep-driver"
    assert Job.objects.get(pk=plain.pk).kind == "finetune"


def test_evaluations_stored_before_the_scoring_convention_say_they_scored_without_special_tokens(people):
    migration = importlib.import_module(
        "controlplane.training.migrations.0015_evaluations_scored_without_special_tokens"
    )
    old, new, plain = (job_make(people["demo"], people["alice"]) for _ in range(3))
    Job.objects.filter(pk=old.pk).update(config={**old.config, "evaluation": {"metrics": ["perplexity"]}})
    Job.objects.filter(pk=new.pk).update(
        config={**new.config, "evaluation": {"metrics": ["perplexity"], "special_tokens": "tokenizer"}}
    )

    migration.scored_without_special_tokens(apps, None)

    assert Job.objects.get(pk=old.pk).config["evaluation"]["special_tokens"] == "none"
    assert Job.objects.get(pk=new.pk).config["evaluation"]["special_tokens"] == "tokenizer"
    assert Job.objects.get(pk=plain.pk).config.get("evaluation") is None
