"""The runs pages (/p/<slug>/runs, /runs/) and their bulk actions (runs/bulk)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from controlplane.sweeps.models import Sweep, Trial
from controlplane.training.models import Job, JobStatus, JobTag
from controlplane.training.services.summaries import job_metric_summary_write
from tests.factories import job_make

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _finished(job: Job, eval_loss: float) -> Job:
    Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED, metrics={"eval_loss": eval_loss})
    job_metric_summary_write(job_id=job.pk)
    return job


@pytest.fixture
def jobs(people):
    return [_finished(job_make(people["demo"], people["alice"]), n / 10) for n in range(3)]


def test_the_project_runs_page_lists_its_jobs_with_their_metric_columns(people, jobs):
    response = _client(people["bob"]).get("/p/demo/runs")
    assert response.status_code == 200
    text = response.content.decode()
    for job in jobs:
        assert f'data-job="{job.pk}"' in text
    assert 'data-sort="metric.eval_loss"' in text  # a default column, as the runs have it
    assert 'data-sort="param.learning_rate"' in text
    assert response.context["project"] == people["demo"]


def test_sorting_paging_and_chosen_columns_come_from_the_url(people, jobs):
    client = _client(people["alice"])
    first = client.get("/p/demo/runs?ordering=-metric.eval_loss&limit=2&cols=param.batch_size")
    rows = [row.job.pk for row in first.context["table"].rows]
    assert rows == [jobs[2].pk, jobs[1].pk]
    assert first.context["table"].columns == ["param.batch_size"]
    next_url = first.context["links"]["next"]
    assert "cols=param.batch_size" in next_url and "cursor=" in next_url
    second = client.get("/p/demo/runs" + next_url)
    assert [row.job.pk for row in second.context["table"].rows] == [jobs[0].pk]
    assert second.context["links"]["next"] is None and second.context["links"]["first"]


def test_a_sweep_trial_shows_its_sweep(people, jobs):
    job = jobs[0]
    sweep = Sweep.objects.create(
        project=people["demo"],
        name="lr-search",
        study_name="runs-page",
        created_by=people["alice"],
        base_model=job.base_model,
        dataset_version=job.dataset_version,
        base_config={},
        search_space={},
        n_trials=1,
    )
    Trial.objects.create(sweep=sweep, number=4, job=job, params={})
    text = _client(people["alice"]).get("/p/demo/runs").content.decode()
    assert f'href="/sweeps/{sweep.pk}/"' in text and "trial 4" in text


def test_bad_filters_answer_400_with_a_message_on_the_page(people, jobs):
    client = _client(people["alice"])
    for query, word in [
        ("status=done", "status"),
        ("ordering=x", "ordering"),
        ("cols=colour", "cols"),
        ("cursor=zz", "cursor"),
    ]:
        response = client.get(f"/p/demo/runs?{query}")
        assert response.status_code == 400, query
        assert word in response.context["error"]
        assert 'id="runs-error"' in response.content.decode()


def test_empty_form_fields_mean_any(people, jobs):
    response = _client(people["alice"]).get("/p/demo/runs?q=&status=&kind=&metric=&created_after=")
    assert response.status_code == 200 and len(response.context["table"].rows) == 3


def test_an_outsider_gets_404_and_all_runs_shows_only_their_projects(people, jobs):
    charlie = _client(people["charlie"])
    assert charlie.get("/p/demo/runs").status_code == 404
    theirs = job_make(people["other"], people["charlie"])
    rows = [row.job.pk for row in charlie.get("/runs/").context["table"].rows]
    assert rows == [theirs.pk]
    mine = [row.job.pk for row in _client(people["alice"]).get("/runs/").context["table"].rows]
    assert theirs.pk not in mine and len(mine) == 3


def test_the_page_costs_the_same_queries_at_any_size(people, jobs):
    client = _client(people["alice"])

    def count() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert (
                client.get("/p/demo/runs?ordering=-metric.eval_loss&status=succeeded&limit=2").status_code
                == 200
            )
        return len(captured)

    few = count()
    for n in range(5):
        _finished(job_make(people["demo"], people["bob"]), n)
    assert count() == few


def test_bulk_tag_compare_and_cancel(people, jobs):
    client = _client(people["alice"])
    ids = [str(job.pk) for job in jobs[:2]]
    tagged = client.post(
        "/runs/bulk", {"action": "tag", "tag": "baseline", "job": ids, "next": "/p/demo/runs"}
    )
    assert tagged.status_code == 302 and tagged.url == "/p/demo/runs"
    assert sorted(JobTag.objects.filter(name="baseline").values_list("job_id", flat=True)) == sorted(
        map(int, ids)
    )
    compare = client.post("/runs/bulk", {"action": "compare", "job": ids})
    assert compare.status_code == 302 and compare.url == f"/compare/?runs={','.join(sorted(ids, key=int))}"
    queued = job_make(people["demo"], people["bob"])
    cancel = client.post(
        "/runs/bulk", {"action": "cancel", "job": [str(queued.pk), ids[0]], "next": "/p/demo/runs"}
    )
    assert cancel.status_code == 302
    queued.refresh_from_db()
    assert queued.status == JobStatus.CANCELLED
    assert Job.objects.get(pk=ids[0]).status == JobStatus.SUCCEEDED


def test_bulk_refuses_viewers_outsiders_and_bad_input(people, jobs):
    ids = [str(jobs[0].pk)]
    assert (
        _client(people["viv"]).post("/runs/bulk", {"action": "tag", "tag": "x", "job": ids}).status_code
        == 403
    )
    outsider = _client(people["charlie"]).post("/runs/bulk", {"action": "tag", "tag": "x", "job": ids})
    assert outsider.status_code == 302  # as if the run did not exist
    client = _client(people["alice"])
    for body in (
        {"action": "tag", "tag": "has space", "job": ids},
        {"action": "explode", "job": ids},
        {"action": "tag", "tag": "x", "job": ["1x"]},
        {"action": "compare", "job": ids},  # one run
    ):
        response = client.post("/runs/bulk", body)
        assert response.status_code in (302, 400), body
    assert not JobTag.objects.exists()
    assert _client(people["alice"]).get("/runs/bulk").status_code == 405
