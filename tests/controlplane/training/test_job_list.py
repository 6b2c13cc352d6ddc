"""GET /api/v1/jobs: the runs table's filters, sorts and keyset pages; PATCH for tags and notes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.training.models import Job, JobMetricValue, JobParam, JobStatus, JobTag
from controlplane.training.services.summaries import job_metric_summary_write
from tests.factories import job_make

pytestmark = pytest.mark.django_db


def _finished(job: Job, metrics: dict, status: str = JobStatus.SUCCEEDED) -> Job:
    Job.objects.filter(pk=job.pk).update(status=status, metrics=metrics)
    job_metric_summary_write(job_id=job.pk)
    job.refresh_from_db()
    return job


def _ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def _walk(client, url: str) -> list[int]:
    seen: list[int] = []
    while url:
        response = client.get(url)
        seen += _ids(response)
        url = response.json()["next"]
    return seen


@pytest.fixture
def runs(people):
    demo, alice, bob = people["demo"], people["alice"], people["bob"]
    jobs = [
        _finished(
            job_make(demo, alice, config={"hyperparameters": {"learning_rate": 1e-4}}), {"eval_loss": 0.9}
        ),
        _finished(
            job_make(demo, bob, config={"hyperparameters": {"learning_rate": 3e-4}}), {"eval_loss": 0.5}
        ),
        _finished(
            job_make(demo, alice, config={"hyperparameters": {"learning_rate": 2e-4}}),
            {"eval_loss": 0.7},
            status=JobStatus.FAILED,
        ),
        job_make(demo, bob, config={"method": {"name": "full"}}),  # queued: no metrics
    ]
    return jobs


def test_the_list_is_newest_first_and_has_no_next_when_it_fits(api_for, runs):
    response = api_for("alice").get("/api/v1/jobs?project=demo")
    assert _ids(response) == [job.pk for job in reversed(runs)]
    assert response.json()["next"] is None


def test_a_cursor_walk_meets_every_job_exactly_once(api_for, people, runs):
    more = [job_make(people["demo"], people["alice"]) for _ in range(8)]
    Job.objects.filter(pk__in=[j.pk for j in more[:5]]).update(created_at=runs[0].created_at)  # ties
    everyone = {job.pk for job in runs + more}
    for ordering in ("-created_at", "created_at", "name", "-status", "run_seconds", "metric.eval_loss"):
        seen = _walk(api_for("alice"), f"/api/v1/jobs?project=demo&limit=3&ordering={ordering}")
        assert sorted(seen) == sorted(everyone), ordering
        assert len(seen) == len(everyone), ordering


def test_sorting_by_a_final_metric_puts_jobs_without_it_last(api_for, runs):
    ascending = _ids(api_for("alice").get("/api/v1/jobs?project=demo&ordering=metric.eval_loss"))
    assert ascending == [runs[1].pk, runs[2].pk, runs[0].pk, runs[3].pk]
    descending = _ids(api_for("alice").get("/api/v1/jobs?project=demo&ordering=-metric.eval_loss&limit=1"))
    assert descending == [runs[0].pk]


def test_sorting_by_a_hyperparameter(api_for, runs):
    ids = _ids(api_for("alice").get("/api/v1/jobs?project=demo&ordering=-param.learning_rate"))
    # The queued job has the default learning rate (2e-4), written when it was created.
    assert ids[0] == runs[1].pk and ids[-1] == runs[0].pk
    assert JobParam.objects.filter(job=runs[3], name="learning_rate").exists()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=succeeded", [1, 0]),
        ("status=succeeded,failed", [2, 1, 0]),
        ("kind=finetune&creator=bob", [3, 1]),
        ("method=full", [3]),
        ("metric=eval_loss:0.6:1", [2, 0]),
        ("metric=eval_loss::0.6", [1]),
        ("param=learning_rate:2e-4:", [3, 2, 1]),
        ("q=needle", [2]),
        ("tag=best", [1]),
    ],
)
def test_each_filter(api_for, runs, query, expected):
    Job.objects.filter(pk=runs[2].pk).update(notes="the NEEDLE is here")
    JobTag.objects.create(job=runs[1], project=runs[1].project, name="best")
    ids = _ids(api_for("alice").get(f"/api/v1/jobs?project=demo&{query}"))
    assert ids == [runs[i].pk for i in expected]


def test_filters_by_dataset_base_model_and_date(api_for, runs):
    job = runs[1]
    client = api_for("alice")
    assert _ids(client.get(f"/api/v1/jobs?project=demo&dataset_version={job.dataset_version_id}")) == [job.pk]
    assert _ids(client.get(f"/api/v1/jobs?project=demo&dataset={job.dataset_version.dataset_id}")) == [job.pk]
    assert _ids(client.get(f"/api/v1/jobs?project=demo&base_model={job.base_model_id}")) == [job.pk]
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(days=10))
    old = _ids(
        client.get(
            "/api/v1/jobs",
            {"project": "demo", "created_before": str(timezone.now().date() - timedelta(days=5))},
        )
    )
    assert old == [job.pk]
    recent = _ids(
        client.get(
            "/api/v1/jobs",
            {"project": "demo", "created_after": (timezone.now() - timedelta(days=1)).isoformat()},
        )
    )
    assert job.pk not in recent and len(recent) == 3


def test_without_a_project_the_list_spans_the_callers_projects_only(api_for, people, runs):
    theirs = job_make(people["other"], people["charlie"])
    mine = _ids(api_for("alice").get("/api/v1/jobs"))
    assert theirs.pk not in mine and sorted(mine) == sorted(j.pk for j in runs)
    assert _ids(api_for("charlie").get("/api/v1/jobs")) == [theirs.pk]
    assert api_for("charlie").get("/api/v1/jobs?project=demo").status_code == 404


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("status=done", "status"),
        ("kind=train", "kind"),
        ("ordering=colour", "ordering"),
        ("ordering=metric.", "ordering"),
        ("metric=eval_loss", "metric"),
        ("metric=eval_loss:a:1", "metric"),
        ("metric=eval_loss:2:1", "metric"),
        ("metric=eval_loss:nan:", "metric"),
        ("param=lr:1:inf", "param"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=x", "limit"),
        ("cursor=!!!", "cursor"),
        ("cursor=WyJ4Il0", "cursor"),
        ("created_after=yesterday", "created_after"),
        ("dataset=-1", "dataset"),
        ("project=", "project"),
        ("colour=red", "colour"),
    ],
)
def test_bad_parameters_are_a_400_naming_them(api_for, runs, query, parameter):
    response = api_for("alice").get(f"/api/v1/jobs?{query}")
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "validation_failed"
    assert parameter in response.json()["message"]


def test_a_cursor_of_another_ordering_is_refused(api_for, people, runs):
    first = api_for("alice").get("/api/v1/jobs?project=demo&limit=1").json()["next"]
    cursor = first.split("cursor=")[1]
    response = api_for("alice").get(f"/api/v1/jobs?project=demo&ordering=name&cursor={cursor}")
    assert response.status_code == 400 and "cursor" in response.json()["message"]


def test_a_page_costs_the_same_queries_at_any_size(api_for, people, runs):
    url = "/api/v1/jobs?project=demo&ordering=-metric.eval_loss&status=succeeded,failed&limit=2"

    def count() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert api_for("alice").get(url).status_code == 200
        return len(captured)

    few = count()
    for n in range(6):
        _finished(job_make(people["demo"], people["bob"]), {"eval_loss": n / 10})
        JobTag.objects.create(job=runs[0], project=runs[0].project, name=f"t{n}")
    assert count() == few


def test_a_member_tags_and_notes_a_job(api_for, runs):
    job = runs[0]
    response = api_for("bob").patch(
        f"/api/v1/jobs/{job.pk}",
        {"tags": ["baseline", "paper-1", "baseline"], "notes": "lr too low"},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["tags"] == ["baseline", "paper-1"] and response.json()["notes"] == "lr too low"
    response = api_for("bob").patch(f"/api/v1/jobs/{job.pk}", {"tags": ["paper-1"]}, format="json")
    assert response.json()["tags"] == ["paper-1"] and response.json()["notes"] == "lr too low"
    listed = api_for("alice").get("/api/v1/jobs?project=demo&tag=paper-1").json()["results"]
    assert [row["tags"] for row in listed] == [["paper-1"]]


def test_tags_and_notes_are_refused_to_viewers_outsiders_and_bad_input(api_for, runs):
    url = f"/api/v1/jobs/{runs[0].pk}"
    assert api_for("viv").patch(url, {"tags": ["x"]}, format="json").status_code == 403
    assert api_for("charlie").patch(url, {"tags": ["x"]}, format="json").status_code == 404
    for body in (
        {"tags": ["has space"]},
        {"tags": "x"},
        {"tags": ["t"] * 21},
        {"notes": "x" * 10_001},
        {"x": 1},
    ):
        response = api_for("alice").patch(url, body, format="json")
        assert response.status_code == 400, (body, response.content)
        assert response.json()["error"] == "validation_failed"
    assert not JobTag.objects.exists()


def test_a_retry_clears_the_final_metrics_it_sorted_by(runs, people):
    from controlplane.training.services import job_retry

    failed = runs[2]
    assert JobMetricValue.objects.filter(job=failed).exists()
    job_retry(job=failed, user=people["alice"])
    assert not JobMetricValue.objects.filter(job=failed).exists()


def test_a_job_finished_by_its_worker_sorts_by_its_final_metrics(api_for, people):
    from controlplane.training.services import job_claim, job_finish
    from workers.spec import JobOutcome, JobResult

    job = job_make(people["demo"], people["alice"])
    job_claim(job_id=job.pk, attempt=1, worker="w1")
    job_finish(
        job_id=job.pk,
        result=JobResult(attempt=1, worker="w1", outcome=JobOutcome.SUCCEEDED, metrics={"eval_loss": 0.25}),
    )
    assert JobMetricValue.objects.get(job=job, name="eval_loss").value == 0.25
    other = job_make(people["demo"], people["alice"])  # newer, without the metric
    ids = _ids(
        api_for("alice").get("/api/v1/jobs?project=demo&ordering=metric.eval_loss&metric=eval_loss:0:1")
    )
    assert ids == [job.pk] and other.pk not in ids
