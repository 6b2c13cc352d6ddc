"""The dashboards: their pre-aggregates (worker-hours from heartbeats, finished jobs with cost),
their tables (leaderboard, failures, queue), CSV export, bad ranges, and who may read them."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.dashboards import selectors
from controlplane.dashboards.models import UNKNOWN_GPU, FinishedJob, GpuPrice, WorkerHour
from controlplane.dashboards.services import hour_of, worker_usage_record
from controlplane.errors import ValidationFailed
from controlplane.registry.models import Deployment, Promotion
from controlplane.training.models import Job, JobStatus, Worker
from controlplane.training.services import job_claim, job_finish, worker_heartbeat_record
from tests.conftest import PASSWORD
from tests.factories import job_make, model_version_make, promotion_make
from workers.spec import GpuState, JobKind, JobOutcome, JobResult, WorkerHeartbeat

pytestmark = pytest.mark.django_db

H100 = "NVIDIA H100 80GB HBM3"
TWO_GPUS = {"resources": {"gpus": 2, "queue": "dash-test"}}


def _beat(utilizations: list[int | None], name: str = "w1") -> WorkerHeartbeat:
    gpus = [GpuState(index=i, name=H100, utilization_percent=u) for i, u in enumerate(utilizations)]
    return WorkerHeartbeat(name=name, host="h", queues=["gpu"], gpus=gpus)


def _client(user) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def _scope(people, days: int = 30) -> selectors.Scope:
    return selectors.Scope(projects=[people["demo"]], dates=selectors.date_range_default(days=days))


def _finish(job: Job, *, outcome=JobOutcome.SUCCEEDED, error: str = "", metrics: dict | None = None) -> None:
    result = JobResult(attempt=job.attempt, worker="w1", outcome=outcome, error=error, metrics=metrics or {})
    job_finish(job_id=job.pk, result=result)


# --- worker-hours from heartbeats ------------------------------------------------------------------


def test_a_heartbeat_adds_to_its_hour_and_counts_idle_gpus_as_waste():
    at = timezone.now().replace(minute=10, second=0, microsecond=0)
    worker_usage_record(heartbeat=_beat([90, 0, None]), at=at)  # the first only starts the clock
    worker_usage_record(heartbeat=_beat([90, 0, None]), at=at + timedelta(seconds=10))
    row = WorkerHour.objects.get(worker="w1", hour=hour_of(at))
    assert row.samples == 2
    assert row.gpu_seconds == pytest.approx(30)  # three GPUs, ten seconds
    assert row.busy_gpu_seconds == pytest.approx(10)
    assert row.idle_gpu_seconds == pytest.approx(10)  # the unknown one is neither
    assert row.utilization_seconds == pytest.approx(900)


def test_a_silence_longer_than_offline_counts_nothing_and_a_new_hour_gets_its_row(settings):
    settings.WORKER_OFFLINE_AFTER_SECONDS = 60
    at = timezone.now().replace(minute=59, second=55, microsecond=0)
    worker_usage_record(heartbeat=_beat([50]), at=at)
    worker_usage_record(heartbeat=_beat([50]), at=at + timedelta(seconds=10))  # the next hour
    worker_usage_record(heartbeat=_beat([50]), at=at + timedelta(minutes=30))  # back after an outage
    rows = list(WorkerHour.objects.filter(worker="w1").order_by("hour"))
    assert [r.samples for r in rows] == [1, 2]
    assert rows[1].gpu_seconds == pytest.approx(10)


def test_the_worker_heartbeat_service_feeds_the_hourly_row():
    worker_heartbeat_record(heartbeat=_beat([0, 0]))
    WorkerHour.objects.filter(worker="w1").update(last_sample_at=timezone.now() - timedelta(seconds=10))
    worker_heartbeat_record(heartbeat=_beat([0, 0]))
    row = WorkerHour.objects.get(worker="w1")
    assert row.samples == 2
    assert row.idle_gpu_seconds == pytest.approx(20, abs=1)


# --- finished jobs, GPU-hours and cost -------------------------------------------------------------


def _ran(job: Job, *, seconds: int, worker_gpus: list[str] | None = None, waited: int = 0) -> Job:
    Worker.objects.update_or_create(
        name="w1",
        defaults={
            "host": "h",
            "queues": ["dash-test"],
            "gpus": [{"index": i, "name": n} for i, n in enumerate(worker_gpus or [H100, H100])],
            "last_seen": timezone.now(),
        },
    )
    job_claim(job_id=job.pk, attempt=1, worker="w1")
    now = timezone.now()
    Job.objects.filter(pk=job.pk).update(
        created_at=now - timedelta(seconds=seconds + waited),
        started_at=now - timedelta(seconds=seconds),
        gpu_indices=[0, 1],
    )
    job.refresh_from_db()
    return job


def test_a_finished_job_is_counted_with_its_gpu_model_and_priced(people, django_capture_on_commit_callbacks):
    GpuPrice.objects.create(gpu_model=H100, price_per_hour=Decimal("2.50"))
    job = _ran(job_make(people["demo"], people["alice"], config=TWO_GPUS), seconds=1800, waited=600)
    with django_capture_on_commit_callbacks(execute=True):
        _finish(job)
    row = FinishedJob.objects.get(job_id=job.pk)
    assert row.gpu_model == H100
    assert row.gpu_hours == pytest.approx(1.0, abs=0.01)
    assert row.wait_seconds == pytest.approx(600, abs=2)
    people_table = selectors.usage_by_person(_scope(people))
    assert people_table.rows == [["alice", 1, 0.5, 1.0, 2.5]]
    projects_table = selectors.usage_by_project(_scope(people))
    assert projects_table.rows[0][0] == "demo" and projects_table.rows[0][4] == 2.5


def test_an_unpriced_gpu_model_has_no_cost_rather_than_zero(people, django_capture_on_commit_callbacks):
    job = _ran(job_make(people["demo"], people["alice"], config=TWO_GPUS), seconds=3600)
    with django_capture_on_commit_callbacks(execute=True):
        _finish(job)
    assert selectors.usage_by_person(_scope(people)).rows[0][4] is None


def test_a_cpu_job_counts_as_the_unknown_gpu(people, django_capture_on_commit_callbacks):
    job = _ran(job_make(people["demo"], people["alice"], config={"resources": {"queue": "q"}}), seconds=60)
    with django_capture_on_commit_callbacks(execute=True):
        _finish(job)
    assert FinishedJob.objects.get(job_id=job.pk).gpu_model == UNKNOWN_GPU


def test_success_rate_and_top_failure_reasons_group_first_lines(people, django_capture_on_commit_callbacks):
    errors = ["CUDA out of memory\ntrace 1", "CUDA out of memory\ntrace 2", "\nbad dataset row 3"]
    with django_capture_on_commit_callbacks(execute=True):
        for error in errors:
            job = _ran(job_make(people["demo"], people["alice"], config=TWO_GPUS), seconds=60)
            _finish(job, outcome=JobOutcome.FAILED, error=error)
        _finish(_ran(job_make(people["demo"], people["bob"], config=TWO_GPUS), seconds=60))
    assert selectors.failures_table(_scope(people)).rows == [
        ["CUDA out of memory", 2],
        ["bad dataset row 3", 1],
    ]
    assert selectors.outcomes_table(_scope(people)).rows == [[4, 1, 3, 0, 25.0]]


# --- leaderboard -----------------------------------------------------------------------------------


def _evaluation(finetune: Job, metrics: dict, *, dataset_version=None) -> Job:
    return Job.objects.create(
        project=finetune.project,
        name=f"eval of {finetune.pk}",
        created_by=finetune.created_by,
        kind=JobKind.EVALUATE,
        base_model=finetune.base_model,
        dataset_version=dataset_version or finetune.dataset_version,
        config={},
        source_job=finetune,
        queue="q",
        status=JobStatus.SUCCEEDED,
        metrics=metrics,
        mlflow_experiment="x",
        finished_at=timezone.now(),
    )


def test_the_leaderboard_picks_the_best_per_dataset_and_metric_and_flags_deployed(people):
    alice = people["alice"]
    a = job_make(people["demo"], alice)
    b = job_make(people["demo"], alice)
    data = a.dataset_version
    _evaluation(a, {"perplexity": 9.0, "bleu": 30.0}, dataset_version=data)
    _evaluation(b, {"perplexity": 7.5, "bleu": 20.0}, dataset_version=data)
    version = model_version_make(a, alice)
    Deployment.objects.create(
        project=people["demo"],
        model_name=version.name,
        target="production",
        model_version=version,
        promotion=promotion_make(version, alice),
        approved_by=people["carol"],
        approved_at=timezone.now(),
    )
    rows = {row[1]: row for row in selectors.leaderboard_table(_scope(people)).rows}
    assert rows["perplexity"][2:4] == ["lower", 7.5]
    assert rows["perplexity"][4].href.endswith(f"/jobs/{b.pk}/") and rows["perplexity"][6] == ""
    assert rows["bleu"][2:4] == ["higher", 30.0]
    assert rows["bleu"][4].href.endswith(f"/jobs/{a.pk}/")
    assert rows["bleu"][6] == "tiny-lora in production"


# --- queue over time -------------------------------------------------------------------------------


def test_queue_depth_and_wait_follow_the_jobs(people):
    now = timezone.now()
    waited = job_make(people["demo"], people["alice"])
    still = job_make(people["demo"], people["alice"])
    Job.objects.filter(pk=waited.pk).update(
        created_at=now - timedelta(hours=5), started_at=now - timedelta(hours=2), status=JobStatus.RUNNING
    )
    Job.objects.filter(pk=still.pk).update(created_at=now - timedelta(hours=3))
    series = selectors.queue_series(_scope(people, days=7))
    assert len(series["t"]) == 7
    assert series["depth"][-1] == 1  # the one still waiting at the end of today
    assert max(w or 0 for w in series["wait_minutes"]) == pytest.approx(180, abs=1)


# --- the pages -------------------------------------------------------------------------------------


def test_the_project_dashboard_shows_what_runs_and_waits(people):
    job = job_make(people["demo"], people["alice"])
    response = _client(people["viv"]).get("/p/demo/dashboard")
    assert response.status_code == 200
    body = response.content.decode()
    assert f'href="/jobs/{job.pk}/"' in body
    assert 'id="queue-chart"' in body and 'id="dashboard-data"' in body


def test_a_table_exports_as_csv_with_its_header_and_rows(people, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        _finish(_ran(job_make(people["demo"], people["alice"], config=TWO_GPUS), seconds=3600))
    response = _client(people["alice"]).get("/p/demo/dashboard", {"format": "csv", "table": "people"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["Person", "Jobs", "Run-hours", "GPU-hours", "Cost (USD)"]
    assert rows[1][:4] == ["alice", "1", "1.0", "2.0"]


def test_a_csv_cell_that_looks_like_a_formula_stays_text(people):
    job = job_make(people["demo"], people["alice"])
    Job.objects.filter(pk=job.pk).update(name="=HYPERLINK(1)")
    response = _client(people["alice"]).get("/dashboard/", {"format": "csv", "table": "live"})
    assert "'=HYPERLINK(1)" in response.content.decode()


@pytest.mark.parametrize(
    "query",
    [
        {"from": "2026-13-01"},
        {"from": "yesterday"},
        {"from": "2026-05-02", "to": "2026-05-01"},
        {"from": "2020-01-01", "to": "2026-01-01"},
        {"days": "12"},
        {"to": "x" * 5000},
    ],
)
def test_a_bad_date_range_is_a_message_not_a_500(people, query):
    client = _client(people["alice"])
    page = client.get("/p/demo/dashboard", query)
    assert page.status_code == 400
    assert 'id="range-error"' in page.content.decode()
    exported = client.get("/dashboard/", {**query, "format": "csv", "table": "people"})
    assert exported.status_code == 400 and exported.content


def test_an_unknown_table_is_a_400(people):
    response = _client(people["alice"]).get("/dashboard/", {"format": "csv", "table": "secrets"})
    assert response.status_code == 400
    assert b"No table" in response.content


def test_a_range_is_whole_utc_days():
    dates = selectors.date_range_parse({"from": "2026-01-01", "to": "2026-01-03"}, today=date(2026, 2, 1))
    assert (dates.days, dates.hourly, dates.end - dates.start) == (3, True, timedelta(days=3))
    assert selectors.date_range_parse({"days": "7"}, today=date(2026, 2, 1)).first == date(2026, 1, 26)
    with pytest.raises(ValidationFailed):
        selectors.date_range_parse({"from": "2026-1-1"})


def test_the_outsider_gets_404_from_the_project_dashboard_and_its_csv(people):
    charlie = _client(people["charlie"])
    assert charlie.get("/p/demo/dashboard").status_code == 404
    assert charlie.get("/p/demo/dashboard", {"format": "csv", "table": "people"}).status_code == 404
    assert charlie.get("/p/no-such/dashboard").status_code == 404


def test_the_organisation_dashboard_shows_only_the_readers_projects(
    people, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        _finish(_ran(job_make(people["demo"], people["alice"], config=TWO_GPUS), seconds=60))
    exported = _client(people["charlie"]).get("/dashboard/", {"format": "csv", "table": "projects"})
    assert exported.status_code == 200
    assert "demo" not in exported.content.decode()
    assert (
        "demo"
        in _client(people["alice"])
        .get("/dashboard/", {"format": "csv", "table": "projects"})
        .content.decode()
    )


def test_someone_in_no_project_gets_404_from_the_organisation_dashboard(people):
    get_user_model().objects.create_user("nobody", password=PASSWORD)
    assert _client(get_user_model().objects.get(username="nobody")).get("/dashboard/").status_code == 404


def test_the_dashboards_cost_the_same_number_of_queries_at_any_size(
    people, django_capture_on_commit_callbacks
):
    client = _client(people["alice"])

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/dashboard/").status_code == 200
        return len(captured)

    small = queries()
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(6):
            job = _ran(job_make(people["demo"], people["alice"], config=TWO_GPUS), seconds=60)
            _finish(job, metrics={"loss": 1.0})
    for _ in range(3):
        worker_usage_record(heartbeat=_beat([10, 0], name=f"w{_}"))
    assert queries() == small


# --- a superuser reads every project, acts in none of his own accord -------------------------------


@pytest.fixture
def admin_user(people):
    return get_user_model().objects.create_superuser("root", password=PASSWORD)


def test_a_superuser_reads_a_project_he_is_not_a_member_of(people, admin_user):
    client = _client(admin_user)
    assert client.get("/p/demo/").status_code == 200
    assert client.get("/p/demo/dashboard").status_code == 200
    job = job_make(people["demo"], people["alice"])
    assert client.get(f"/jobs/{job.pk}/").status_code == 200
    exported = client.get("/dashboard/", {"format": "csv", "table": "live"})
    assert f"#{job.pk}" in exported.content.decode()


def test_a_superuser_cannot_launch_or_approve_where_he_is_not_a_member(people, admin_user):
    client = _client(admin_user)
    assert client.get("/p/demo/jobs/new").status_code == 403
    job = job_make(people["demo"], people["alice"])
    promotion = promotion_make(model_version_make(job, people["alice"]), people["alice"])
    before = Job.objects.count()
    assert client.post("/p/demo/jobs/new", {}).status_code == 403
    assert client.post(f"/promotions/{promotion.pk}/approve", {}).status_code == 403
    assert client.post(f"/jobs/{job.pk}/cancel", {}).status_code == 403
    assert Promotion.objects.get(pk=promotion.pk).status == "requested"
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED
    assert Job.objects.count() == before


def test_a_superuser_reads_through_the_api_but_cannot_write(people, admin_user):
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(user=admin_user)
    assert api.get("/api/v1/jobs", {"project": "demo"}).status_code == 200
    created = api.post(
        "/api/v1/base-models", {"project": "demo", "name": "m", "uri": "org/model"}, format="json"
    )
    assert created.status_code == 403


def test_the_outsider_still_gets_404_on_a_project_page(people):
    assert _client(people["charlie"]).get("/p/demo/").status_code == 404


def test_the_backfill_counts_finished_jobs_no_hook_saw_once(people):
    from django.core.management import call_command

    job = _ran(job_make(people["demo"], people["alice"], config=TWO_GPUS), seconds=600)
    _finish(job)  # its on-commit hook never runs in this test's transaction
    assert not FinishedJob.objects.exists()
    call_command("dashboards_backfill", stdout=io.StringIO())
    call_command("dashboards_backfill", stdout=io.StringIO())
    assert FinishedJob.objects.get().gpu_model == H100
