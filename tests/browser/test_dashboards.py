"""The dashboards in Chromium: the charts are drawn, a table's CSV link downloads its rows, the range
presets work; at 1440 px and at 390 px (tables scroll in their own box, the page never sideways)."""

from __future__ import annotations

import csv
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from controlplane.dashboards.models import GpuPrice
from controlplane.dashboards.services import finished_job_record, worker_usage_record
from controlplane.training.models import Job, JobStatus, Worker
from tests.browsing import DESKTOP, PHONE, csp_violations, log_in, overflow_px, screenshot
from tests.factories import job_make
from workers.spec import GpuState, JobKind, WorkerHeartbeat

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

H100 = "NVIDIA H100 80GB HBM3"
CHARTS = ("queue-chart", "weeks-chart", "utilization-chart", "usage-chart")


@pytest.fixture
def history(people):
    """A week of jobs by alice and bob (finished, failed, one evaluated, two waiting) and worker-hours."""
    demo, now = people["demo"], timezone.now()
    GpuPrice.objects.create(gpu_model=H100, price_per_hour=2.5)
    Worker.objects.create(
        name="gpu-1",
        host="h",
        queues=["gpu"],
        gpus=[{"index": i, "name": H100} for i in range(4)],
        last_seen=now,
    )
    finetunes = []
    for n in range(12):
        job = job_make(
            demo, people["alice" if n % 3 else "bob"], config={"resources": {"gpus": 2, "queue": "q"}}
        )
        created = now - timedelta(days=n % 7, hours=n)
        failed = n % 5 == 4
        Job.objects.filter(pk=job.pk).update(
            status=JobStatus.FAILED if failed else JobStatus.SUCCEEDED,
            error="CUDA out of memory\n..." if failed else "",
            created_at=created,
            started_at=created + timedelta(minutes=5 + n),
            finished_at=created + timedelta(hours=1),
            run_seconds=3300 - 60 * n,
            worker="gpu-1",
            gpu_indices=[0, 1],
        )
        finished_job_record(job.pk)
        if not failed:
            finetunes.append(job)
    for n, finetune in enumerate(finetunes[:3]):
        evaluation = Job.objects.create(
            project=demo, name=f"eval-{n}", created_by=people["alice"], kind=JobKind.EVALUATE,
            base_model=finetune.base_model, dataset_version=finetunes[0].dataset_version, config={},
            source_job=finetune, queue="q", status=JobStatus.SUCCEEDED, mlflow_experiment="x",
            metrics={"perplexity": 5.0 + n, "bleu": 20.0 + n}, finished_at=now - timedelta(hours=n),
        )  # fmt: skip
        finished_job_record(evaluation.pk)
    job_make(demo, people["alice"])
    job_make(demo, people["bob"])
    start = now - timedelta(days=6)
    for h in range(0, 6 * 24, 3):
        at = start + timedelta(hours=h)
        for step in range(3):
            use = [80, 60, 0, 0] if h % 2 else [0, 0, 0, 0]
            beat = WorkerHeartbeat(
                name="gpu-1",
                host="h",
                queues=["gpu"],
                gpus=[GpuState(index=i, name=H100, utilization_percent=u) for i, u in enumerate(use)],
            )
            worker_usage_record(heartbeat=beat, at=at + timedelta(seconds=10 * step))
    return finetunes


def _charts_drawn(page) -> None:
    from playwright.sync_api import expect

    for chart in CHARTS:
        expect(page.locator(f"#{chart}")).to_have_attribute("data-drawn", "true")
        expect(page.locator(f"#{chart} .main-svg").first).to_be_visible()


def test_the_organisation_dashboard_draws_its_charts_and_downloads_a_csv_at_1440_px(
    browser, live_server, people, history
):
    from playwright.sync_api import expect

    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    violations = csp_violations(context)
    page = context.new_page()
    log_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/dashboard/")
    _charts_drawn(page)
    expect(page.locator('nav [data-nav="org-dashboard"]')).to_have_attribute("aria-current", "page")
    expect(page.locator("#kpi-queued")).to_have_text("2")
    expect(page.locator("#table-failures")).to_contain_text("CUDA out of memory")
    expect(page.locator("#table-leaderboard")).to_contain_text("perplexity")

    with page.expect_download() as download:
        page.locator("#table-people a.csv").click()
    rows = list(csv.reader(Path(download.value.path()).read_text().splitlines()))
    assert rows[0] == ["Person", "Jobs", "Run-hours", "GPU-hours", "Cost (USD)"]
    assert {row[0] for row in rows[1:]} == {"alice", "bob"}
    assert download.value.suggested_filename.startswith("organisation-people-")

    # The whole page in one viewport: a full-page shot would paint the sticky header mid-page.
    page.set_viewport_size({"width": DESKTOP["width"], "height": page.evaluate("document.body.scrollHeight")})
    screenshot(page, "dashboard.png", full_page=False)
    page.set_viewport_size(DESKTOP)

    # A preset narrows the range and keeps the page whole.
    page.get_by_role("link", name="7 days").click()
    page.wait_for_url(re.compile(r"days=7"))
    _charts_drawn(page)
    assert overflow_px(page) == 0
    assert violations == []
    context.close()


def test_the_project_dashboard_fits_a_phone_at_390_px(browser, live_server, people, history):
    from playwright.sync_api import expect

    context = browser.new_context(viewport=PHONE)
    violations = csp_violations(context)
    page = context.new_page()
    log_in(page, live_server.url, "bob")
    page.goto(f"{live_server.url}/p/demo/dashboard")
    _charts_drawn(page)
    expect(page.locator('#project-nav [data-nav="dashboard"]')).to_have_attribute("aria-current", "page")
    expect(page.locator("#table-live")).to_contain_text("queued")
    assert overflow_px(page) == 0
    # A wide table scrolls in its own box.
    box = page.locator("#table-leaderboard .table-scroll")
    assert box.evaluate("el => el.scrollWidth > el.clientWidth")
    screenshot(page, "dashboard-phone.png")

    # A bad range is a message on the page, not an error page.
    page.goto(f"{live_server.url}/p/demo/dashboard?from=2026-02-30")
    expect(page.locator("#range-error")).to_contain_text("from must be a date")
    _charts_drawn(page)
    assert violations == []
    context.close()
