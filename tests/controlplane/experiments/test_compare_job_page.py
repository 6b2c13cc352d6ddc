"""The job page as the server renders it: no "step 0 / 0" before the first step, run time and
history in the live panel (so they update while it runs), links to its dataset and sweep, final
metrics as a table, its evaluations listed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from controlplane.sweeps.models import Sweep, Trial
from controlplane.training.models import Job, JobStatus
from tests.factories import job_make

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_running_job_without_steps_says_it_waits_and_its_live_panel_counts_time(people):
    job = job_make(people["demo"], people["alice"])
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, started_at=timezone.now() - timedelta(seconds=42)
    )
    client = _client(people["alice"])
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "step 0 / 0" not in page and "waiting for the first step" in page
    live = client.get(f"/jobs/{job.pk}/live").content.decode()
    assert 'id="job-run-time"' in live and "ran 4" in live
    assert 'id="job-history"' in live and '<time datetime="' in live
    assert "step 0 / 0" not in live
    assert f'href="/datasets/{job.dataset_version_id}/"' in page


def test_a_finished_job_shows_final_metrics_as_a_table_and_its_sweep(people):
    job = job_make(people["demo"], people["alice"])
    Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED, metrics={"train_loss": 0.125})
    sweep = Sweep.objects.create(
        project=job.project,
        name="lr search",
        study_name="job-page-sweep",
        created_by=people["alice"],
        base_model=job.base_model,
        dataset_version=job.dataset_version,
        base_config={},
        search_space={},
        n_trials=1,
    )
    Trial.objects.create(sweep=sweep, number=3, job=job, params={})
    page = _client(people["bob"]).get(f"/jobs/{job.pk}/").content.decode()
    assert 'id="final-metrics"' in page and "<code>train_loss</code></td><td>0.1250</td>" in page
    assert "train_loss=" not in page
    assert f'id="job-sweep" href="/sweeps/{sweep.pk}/"' in page and "trial 3" in page
    assert "Not evaluated yet." in page


def test_an_outsider_gets_no_job_page_nor_live_panel(people):
    job = job_make(people["demo"], people["alice"])
    client = _client(people["charlie"])
    assert client.get(f"/jobs/{job.pk}/").status_code == 404
    assert client.get(f"/jobs/{job.pk}/live").status_code == 404
