"""A job page in Chromium: before the first metric it says it waits for the first step (never "step
0 / 0" over empty axes); then every logged metric gets a chart, live; its run time and history
update while it runs; its dataset is a link, its evaluations are listed, its final metrics a table."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.training.models import Job, JobKind, JobMetricPoint, JobStatus
from tests.browsing import DESKTOP, PHONE, csp_violations, log_in, overflow_px, screenshot
from tests.factories import dataset_version_make, job_make

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_job_page_charts_every_metric_live_and_links_what_it_used(browser, people, live_server):
    from playwright.sync_api import expect

    job = job_make(people["demo"], people["alice"])
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, started_at=timezone.now() - timedelta(seconds=90), worker="w1"
    )
    context = browser.new_context(viewport=DESKTOP)
    violations = csp_violations(context)
    page = context.new_page()
    page.set_default_timeout(20_000)
    log_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/jobs/{job.pk}/")

    # Before the first metric: said in words, no "step 0 / 0", no empty chart.
    expect(page.locator("#job-step")).to_have_text("waiting for the first step")
    expect(page.locator("#metric-charts-waiting")).to_be_visible()
    assert "step 0 / 0" not in page.content()
    assert page.locator("#metric-charts .main-svg").count() == 0
    expect(page.locator("#job-run-time")).to_contain_text("ran 9")  # 90 s and counting
    expect(page.locator("#job-dataset")).to_have_attribute("href", f"/datasets/{job.dataset_version_id}/")

    # The first points arrive: every metric is charted (the losses together), without a reload.
    JobMetricPoint.objects.bulk_create(
        JobMetricPoint(job=job, attempt=1, name=name, step=step, value=value / step)
        for step in range(1, 11)
        for name, value in (("loss", 2.0), ("eval_loss", 2.2), ("learning_rate", 1e-4), ("grad_norm", 3.0))
    )
    Job.objects.filter(pk=job.pk).update(step=10, total_steps=100, progress=0.1)
    expect(page.locator("#metric-charts")).to_have_attribute("data-metrics", "4")
    for chart in ("#loss-chart", "#metric-chart-learning_rate", "#metric-chart-grad_norm"):
        expect(page.locator(f"{chart} .main-svg").first).to_be_visible()
    expect(page.locator("#loss-chart")).to_have_attribute("data-points", "20")
    expect(page.locator("#metric-charts-waiting")).to_be_hidden()
    expect(page.locator("#job-step")).to_have_text("step 10 / 100")

    # History, with dates, in the live panel: a new event shows without a reload.
    history = page.locator("#job-history time")
    expect(history.first).to_have_attribute("datetime", job.events.first().at.isoformat())
    job.events.create(
        attempt=1, from_status=JobStatus.QUEUED, to_status=JobStatus.RUNNING, actor_label="worker:w1"
    )
    expect(history).to_have_count(2)
    # Closed by the reader, it stays closed through the panel's refreshes (an event proves one came).
    page.locator("#job-history summary").click()
    job.events.create(attempt=1, from_status=JobStatus.RUNNING, to_status=JobStatus.RUNNING, actor_label="w1")
    expect(history).to_have_count(3)
    assert page.locator("#job-history").evaluate("el => el.open") is False

    # It ends with final metrics, and is evaluated: a table, and its evaluation listed.
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.SUCCEEDED, finished_at=timezone.now(), metrics={"train_loss": 0.25, "eval_loss": 0.5}
    )
    evaluation = Job.objects.create(
        project=job.project,
        name="evaluate it",
        created_by=job.created_by,
        kind=JobKind.EVALUATE,
        base_model=job.base_model,
        dataset_version=dataset_version_make(people["demo"], people["alice"]),
        source_job=job,
        config={"evaluation": {"metrics": ["exact_match"]}},
        queue="x",
        mlflow_experiment="x",
        status=JobStatus.SUCCEEDED,
        metrics={"exact_match": 0.75},
    )
    page.goto(f"{live_server.url}/jobs/{job.pk}/")
    expect(page.locator("#final-metrics tr", has_text="train_loss")).to_contain_text("0.2500")
    expect(page.locator("#job-evaluations")).to_contain_text("exact_match")
    expect(page.locator(f'#job-evaluations a[href="/jobs/{evaluation.pk}/"]')).to_be_visible()
    expect(page.locator("#metric-chart-grad_norm .main-svg").first).to_be_visible()
    screenshot(page, "job.png")

    phone = context.new_page()
    phone.set_viewport_size(PHONE)
    phone.goto(f"{live_server.url}/jobs/{job.pk}/")
    expect(phone.locator("#loss-chart .main-svg").first).to_be_visible()
    assert overflow_px(phone) == 0
    assert not violations, violations
    context.close()


def test_a_job_on_a_queue_no_online_worker_reads_says_so_and_changes_when_one_comes(
    browser, people, live_server, settings
):
    """Defect 5: such a job said "waiting for a free worker" forever."""
    from playwright.sync_api import expect

    from controlplane.training.models import Worker
    from tests.factories import FACTORY_QUEUE

    settings.WORKER_OFFLINE_AFTER_SECONDS = 60
    # Whatever else this session runs, a worker on "gpu" and none on the job's queue is online.
    Worker.objects.create(name="w-gpu", host="h", queues=["gpu"], last_seen=timezone.now())
    job = job_make(people["demo"], people["alice"])
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    page.set_default_timeout(20_000)
    log_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/jobs/{job.pk}/")
    waiting = page.locator("#job-waiting")
    expect(waiting).to_contain_text(f"no online worker reads queue {FACTORY_QUEUE}; the queues served now:")
    expect(waiting).to_contain_text("gpu")
    assert "waiting for a free worker" not in waiting.inner_text()
    assert overflow_px(page) == 0

    # A worker of that queue comes online: the live panel says so without a reload.
    Worker.objects.create(name="w-factory", host="h", queues=[FACTORY_QUEUE], last_seen=timezone.now())
    expect(waiting).to_contain_text("waiting for a free worker on this queue")
    context.close()
