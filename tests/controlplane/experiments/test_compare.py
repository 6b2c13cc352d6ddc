"""The compare page and its series: downsampling keeps the shape, bad links are refused with a
message, outsiders see nothing, deltas are taken against the chosen baseline."""

from __future__ import annotations

import math
import random
from unittest import mock

import pytest
from django.test import Client

from controlplane.experiments import compare as compare_module
from controlplane.experiments import series as series_module
from controlplane.experiments.series import MAX_POINTS, downsample, downsample_indices, metric_series
from controlplane.training.models import Job, JobKind, JobMetricPoint, JobStatus
from tests.factories import dataset_version_make, job_make

pytestmark = pytest.mark.django_db


def _signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _points(job: Job, name: str, values: list[float], attempt: int = 1, first_step: int = 1) -> None:
    JobMetricPoint.objects.bulk_create(
        JobMetricPoint(job=job, attempt=attempt, name=name, step=first_step + i, value=v)
        for i, v in enumerate(values)
    )


def _finished(job: Job, **fields) -> Job:
    Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED, run_seconds=100.0, **fields)
    job.refresh_from_db()
    return job


# --- downsampling -----------------------------------------------------------------------------------


def test_downsampling_keeps_first_last_min_and_max_within_the_limit():
    rng = random.Random(7)
    values = [math.sin(i / 300) + rng.gauss(0, 0.1) for i in range(5000)]
    values[1234] = 9.0  # a spike
    values[3210] = -9.0  # a dip
    steps = list(range(5000))
    series = downsample(steps, values)
    assert len(series.steps) <= MAX_POINTS
    assert series.total == 5000
    assert series.steps[0] == 0 and series.steps[-1] == 4999
    assert max(series.values) == 9.0 and min(series.values) == -9.0
    assert 1234 in series.steps and 3210 in series.steps
    assert series.steps == sorted(series.steps)


def test_downsampling_keeps_each_buckets_extremes_so_the_curve_keeps_its_shape():
    values = [float(i % 100) for i in range(10_000)]  # a saw: every bucket spans 0..99
    keep = downsample_indices(values, limit=200)
    kept = [values[i] for i in keep]
    assert kept.count(0.0) >= 90 and kept.count(99.0) >= 90


def test_short_series_are_kept_whole():
    assert downsample_indices([3.0, 1.0, 2.0]).tolist() == [0, 1, 2]


def test_metric_series_reads_every_metric_of_every_job_in_two_queries(people, django_assert_num_queries):
    a = job_make(people["demo"], people["alice"])
    b = job_make(people["demo"], people["alice"])
    _points(a, "loss", [float(5000 - i) for i in range(5000)])
    _points(a, "grad_norm", [1.0, 2.0])
    _points(b, "learning_rate", [0.1, 0.2, 0.3])
    with django_assert_num_queries(2):  # the curves' extents, then their buckets
        series = metric_series(jobs=[a, b])
    assert set(series[a.pk]) == {"loss", "grad_norm"}
    assert set(series[b.pk]) == {"learning_rate"}
    loss = series[a.pk]["loss"]
    assert len(loss.steps) <= MAX_POINTS and loss.values[0] == 5000.0 and loss.values[-1] == 1.0


def test_a_resumed_attempt_replaces_the_points_it_ran_again(people):
    job = job_make(people["demo"], people["alice"])
    _points(job, "loss", [5.0, 4.0, 3.0, 2.0])  # steps 1-4
    _points(job, "loss", [3.5, 2.5], attempt=2, first_step=3)  # resumed from step 2
    series = metric_series(jobs=[job])[job.pk]["loss"]
    assert series.steps == [1, 2, 3, 4] and series.values == [5.0, 4.0, 3.5, 2.5]


def test_both_ways_of_reading_keep_the_shape_of_a_long_resumed_curve(people, monkeypatch):
    job = job_make(people["demo"], people["alice"])
    rng = random.Random(3)
    first = [rng.uniform(1, 2) for _ in range(3000)]  # steps 1-3000, then a retry resumed at 2001
    second = [rng.uniform(1, 2) for _ in range(3000)]  # steps 2001-5000
    first[500], second[2500] = 0.25, 7.0  # the lowest (kept), the highest
    first[2500] = -5.0  # replaced by the second attempt: must not show
    _points(job, "loss", first)
    _points(job, "loss", second, attempt=2, first_step=2001)
    _points(job, "eval_loss", [3.0, 2.0, 1.0])
    in_database = metric_series(jobs=[job])[job.pk]
    monkeypatch.setattr(series_module.connection, "vendor", "sqlite")
    in_python = metric_series(jobs=[job])[job.pk]
    for read in (in_database, in_python):
        loss = read["loss"]
        assert len(loss.steps) <= MAX_POINTS and loss.steps == sorted(loss.steps)
        assert (loss.steps[0], loss.values[0]) == (1, first[0])
        assert (loss.steps[-1], loss.values[-1]) == (5000, second[-1])
        assert min(loss.values) == 0.25 and max(loss.values) == 7.0
        assert loss.steps[loss.values.index(0.25)] == 501 and loss.steps[loss.values.index(7.0)] == 4501
        assert read["eval_loss"].steps == [1, 2, 3] and read["eval_loss"].values == [3.0, 2.0, 1.0]


# --- bad links and outsiders ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("", 400, "Choose 2 to 10 runs"),
        ("?runs=", 400, "Choose 2 to 10 runs"),
        ("?runs=1", 400, "names 1"),
        ("?runs=1,1", 400, "names 1"),
        ("?runs=" + ",".join(str(i) for i in range(1, 12)), 400, "names 11"),
        ("?runs=1,abc", 400, "is not one"),
        ("?runs=1,-2", 400, "is not one"),
        ("?runs=1,99999999999999999999", 400, "is not one"),
        ("?runs=999998,999999", 404, "Job 999998 was not found"),
    ],
)
def test_a_bad_link_says_what_is_wrong(people, query, status, message):
    response = _signed_in(people["alice"]).get(f"/compare/{query}")
    assert response.status_code == status
    assert message in response.content.decode()


@pytest.mark.parametrize(
    "extra",
    [
        "&baseline=12345",
        "&baseline=x",
        "&smooth=2",
        "&smooth=nan",
        "&smooth=x",
        "&x=epoch",
        "&x=tokens",  # no run logged the tokens it saw
        "&log=yes",
        "&diff=2",
    ],
)
def test_bad_display_options_are_refused_with_a_message(people, extra):
    a = job_make(people["demo"], people["alice"])
    b = job_make(people["demo"], people["alice"])
    response = _signed_in(people["alice"]).get(f"/compare/?runs={a.pk},{b.pk}{extra}")
    assert response.status_code == 400
    assert 'class="msg error"' in response.content.decode()


def test_an_outsider_is_refused_as_if_the_runs_did_not_exist(people):
    a = job_make(people["demo"], people["alice"])
    b = job_make(people["demo"], people["alice"])
    response = _signed_in(people["charlie"]).get(f"/compare/?runs={a.pk},{b.pk}")
    assert response.status_code == 404
    body = response.content.decode()
    assert f"Job {a.pk} was not found, or you cannot see it." in body
    assert a.name not in body


def test_one_run_of_another_project_refuses_the_whole_comparison(people):
    mine = job_make(people["demo"], people["alice"])
    theirs = job_make(people["other"], people["charlie"])
    response = _signed_in(people["alice"]).get(f"/compare/?runs={mine.pk},{theirs.pk}")
    assert response.status_code == 404
    assert f"Job {theirs.pk} was not found" in response.content.decode()


def test_signed_out_visitors_are_sent_to_log_in(people):
    assert Client().get("/compare/?runs=1,2").status_code == 302


# --- the page ---------------------------------------------------------------------------------------


def test_parameters_mark_what_differs_and_deltas_are_against_the_baseline(people):
    a = _finished(
        job_make(people["demo"], people["alice"], config={"hyperparameters": {"learning_rate": 0.001}}),
        metrics={"train_loss": 2.0, "eval_loss": 1.0},
    )
    b = _finished(
        job_make(people["demo"], people["bob"], config={"hyperparameters": {"learning_rate": 0.0003}}),
        metrics={"train_loss": 1.5, "eval_loss": 1.25},
    )
    _points(a, "loss", [3.0, 2.0])
    _points(b, "loss", [3.0, 1.5])
    response = _signed_in(people["alice"]).get(f"/compare/?runs={a.pk},{b.pk}&baseline={a.pk}&diff=1")
    assert response.status_code == 200
    context = response.context
    params = {row.name: row for row in context["params"]}
    assert params["hyperparameters.learning_rate"].differs
    assert params["hyperparameters.learning_rate"].values == ["0.001", "0.0003"]
    assert not params["method.name"].differs
    assert params["creator"].values == ["alice", "bob"]
    assert params["dataset version"].differs  # the factory makes a dataset per job
    finals = {row.name: row for row in context["final_rows"]}
    train_b = finals["train_loss"].cells[1]
    assert train_b.delta == pytest.approx(-0.5) and train_b.percent == pytest.approx(-25.0) and train_b.better
    assert finals["eval_loss"].cells[1].better is False
    assert finals["train_loss"].cells[0].delta is None  # the baseline itself
    body = response.content.decode()
    assert 'id="param-table" class="only-diff"' in body
    assert "-0.5000" in body and "(-25.0%)" in body
    assert 'id="compare-data"' in body
    data = context["chart_data"]
    assert data["metrics"]["loss"][str(b.pk)]["values"] == [3.0, 1.5]
    assert data["runs"][0]["seconds_per_step"] == pytest.approx(50.0)
    assert "Tokens seen are not logged" in body


def test_another_baseline_moves_the_deltas(people):
    a = _finished(job_make(people["demo"], people["alice"]), metrics={"train_loss": 2.0})
    b = _finished(job_make(people["demo"], people["alice"]), metrics={"train_loss": 1.0})
    response = _signed_in(people["alice"]).get(f"/compare/?runs={a.pk},{b.pk}&baseline={b.pk}")
    cells = response.context["final_rows"][0].cells
    assert cells[0].delta == pytest.approx(1.0) and cells[1].delta is None


def _evaluation(source: Job, version, metrics: dict, predictions: str = "") -> Job:
    artifacts = {"predictions": predictions} if predictions else {}
    return Job.objects.create(
        project=source.project,
        name=f"evaluate {source.pk}",
        created_by=source.created_by,
        kind=JobKind.EVALUATE,
        base_model=source.base_model,
        dataset_version=version,
        source_job=source,
        config={"evaluation": {"metrics": ["exact_match"]}},
        queue="x",
        mlflow_experiment="x",
        status=JobStatus.SUCCEEDED,
        metrics=metrics,
        artifacts=artifacts,
    )


def test_evaluations_on_the_same_rows_are_compared_and_shown_side_by_side(people):
    a = _finished(job_make(people["demo"], people["alice"]))
    b = _finished(job_make(people["demo"], people["alice"]))
    held_out = dataset_version_make(people["demo"], people["alice"])
    _evaluation(a, held_out, {"exact_match": 0.5}, "runs:/ra/predictions/predictions.json")
    _evaluation(b, held_out, {"exact_match": 0.75}, "runs:/rb/predictions/predictions.json")
    tables = {
        "runs:/ra/predictions/predictions.json": [
            {"row": 0, "input": "2+2?", "prediction": "5", "reference": "4", "score": 0.0},
            {"row": 1, "input": "3+3?", "prediction": "6", "reference": "6", "score": 1.0},
        ],
        "runs:/rb/predictions/predictions.json": [
            {"row": 0, "input": "2+2?", "prediction": "4", "reference": "4", "score": 1.0},
            {"row": 1, "input": "3+3?", "prediction": "6", "reference": "6", "score": 1.0},
        ],
    }
    with mock.patch.object(compare_module.tracking, "table_read", side_effect=tables.__getitem__):
        response = _signed_in(people["alice"]).get(f"/compare/?runs={a.pk},{b.pk}")
    assert response.status_code == 200
    label = f"exact_match on {held_out.dataset.name}:v1"
    row = {r.name: r for r in response.context["eval_rows"]}[label]
    assert row.cells[1].delta == pytest.approx(0.25) and row.cells[1].better
    (table,) = response.context["outputs"]
    assert table.total_rows == 2
    assert [o["prediction"] for o in table.rows[0]["outputs"]] == ["5", "4"]
    assert "2+2?" in response.content.decode()


def test_evaluations_without_per_row_outputs_say_so(people):
    a = _finished(job_make(people["demo"], people["alice"]))
    b = _finished(job_make(people["demo"], people["alice"]))
    held_out = dataset_version_make(people["demo"], people["alice"])
    _evaluation(a, held_out, {"perplexity": 3.0})
    _evaluation(b, held_out, {"perplexity": 2.0})
    response = _signed_in(people["alice"]).get(f"/compare/?runs={a.pk},{b.pk}")
    body = response.content.decode()
    assert response.context["outputs"] == []
    assert "kept no per-row outputs" in body and 'id="no-outputs"' in body


def test_runs_that_logged_their_tokens_can_be_drawn_by_tokens(people):
    a = job_make(people["demo"], people["alice"])
    b = job_make(people["demo"], people["alice"])
    for job in (a, b):
        _points(job, "loss", [3.0, 2.0])
        _points(job, "num_input_tokens_seen", [512.0, 1024.0])
    response = _signed_in(people["alice"]).get(f"/compare/?runs={a.pk},{b.pk}&x=tokens")
    assert response.status_code == 200
    data = response.context["chart_data"]
    assert set(data["metrics"]) == {"loss"}  # the tokens are the x axis, not a chart
    assert data["tokens"][str(a.pk)]["values"] == [512.0, 1024.0]
    assert '<option value="tokens" selected>' in response.content.decode()
