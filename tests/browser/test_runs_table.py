"""The runs table in Chromium: filter, sort, the next page, select two rows to compare, tag in bulk;
at 1440 px and at 390 px (the table scrolls inside its box, the page never sideways)."""

from __future__ import annotations

import re

import pytest

from controlplane.training.models import Job, JobStatus
from controlplane.training.services.summaries import job_metric_summary_write
from tests.browsing import DESKTOP, PHONE, csp_violations, log_in, overflow_px, screenshot
from tests.factories import job_make

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def runs(people):
    """Five finished runs with eval_loss 0.1..0.5 and one failed, on one dataset and base model."""
    demo, alice = people["demo"], people["alice"]
    jobs = []
    for n in range(6):
        job = job_make(demo, alice, config={"hyperparameters": {"learning_rate": (n + 1) * 1e-4}})
        status = JobStatus.FAILED if n == 5 else JobStatus.SUCCEEDED
        Job.objects.filter(pk=job.pk).update(
            status=status,
            metrics={"eval_loss": (n + 1) / 10, "train_loss": 1 - n / 10},
            run_seconds=60 * (n + 1),
        )
        job_metric_summary_write(job_id=job.pk)
        jobs.append(job)
    return jobs


def _row_ids(page) -> list[int]:
    return [int(row.get_attribute("data-job")) for row in page.locator("#runs-table tbody tr").all()]


def test_filter_sort_page_compare_and_tag_at_1440_px(browser, live_server, people, runs):
    context = browser.new_context(viewport=DESKTOP)
    violations = csp_violations(context)
    page = context.new_page()
    log_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/p/demo/runs")
    assert _row_ids(page) == [job.pk for job in reversed(runs)]
    assert page.locator("#project-nav [data-nav=runs]").count() == 1

    # Filter: only the succeeded ones.
    page.locator("select[name=status]").select_option("succeeded")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"status=succeeded"))
    assert _row_ids(page) == [job.pk for job in reversed(runs[:5])]

    # Sort by eval_loss (the header toggles descending first, then ascending).
    page.locator("th a[data-sort='metric.eval_loss']").click()
    page.wait_for_url(re.compile(r"ordering=-metric.eval_loss"))
    page.locator("th a[data-sort='metric.eval_loss']").click()
    page.wait_for_url(re.compile(r"ordering=metric.eval_loss"))
    assert _row_ids(page) == [job.pk for job in runs[:5]]

    # Pages of two: the next page goes on where the first stopped; "First page" comes back.
    page.goto(page.url + "&limit=2")
    assert _row_ids(page) == [runs[0].pk, runs[1].pk]
    page.locator("#next-page").click()
    page.wait_for_url(re.compile(r"cursor="))
    assert _row_ids(page) == [runs[2].pk, runs[3].pk]
    page.locator("#first-page").click()
    page.wait_for_url(re.compile(r"^(?!.*cursor=)"))
    assert _row_ids(page) == [runs[0].pk, runs[1].pk]

    # Select two rows: the Compare link carries both ids.
    compare = page.locator("#compare-link")
    assert compare.get_attribute("aria-disabled") == "true"
    page.locator(f"input.run-select[value='{runs[0].pk}']").check()
    page.locator(f"input.run-select[value='{runs[1].pk}']").check()
    assert compare.get_attribute("aria-disabled") == "false"
    assert compare.get_attribute("href").endswith(f"/compare/?runs={runs[0].pk},{runs[1].pk}")
    assert page.locator("#selected-count").inner_text() == "2 selected"

    # Tag both: the tag shows on their rows, and the table stays as it was (same URL).
    before = page.url
    page.locator("#bulk-tag").fill("baseline")
    page.locator("#bulk-tag-button").click()
    page.wait_for_load_state()
    assert page.url == before
    for job in runs[:2]:
        assert page.locator(f"tr[data-job='{job.pk}'] .tag").inner_text() == "baseline"
    page.goto(f"{live_server.url}/p/demo/runs?tag=baseline")
    assert sorted(_row_ids(page)) == sorted(job.pk for job in runs[:2])

    # Columns: choose train_loss; it shows as a header, kept in the URL.
    page.goto(f"{live_server.url}/p/demo/runs")
    page.locator("#column-chooser summary").click()
    page.locator("input[name=cols][value='metric.train_loss']").check()
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"cols=metric.train_loss"))
    assert page.locator("th a[data-sort='metric.train_loss']").count() == 1

    page.goto(f"{live_server.url}/p/demo/runs?ordering=metric.eval_loss")
    screenshot(page, "runs.png")
    assert overflow_px(page) == 0
    assert violations == []
    context.close()


def test_the_runs_table_fits_a_phone_and_scrolls_in_its_box(browser, live_server, people, runs):
    context = browser.new_context(viewport=PHONE)
    violations = csp_violations(context)
    page = context.new_page()
    log_in(page, live_server.url, "alice")
    for url in (
        "/p/demo/runs?cols=metric.eval_loss,metric.train_loss,param.learning_rate,param.batch_size",
        "/runs/",
    ):
        page.goto(f"{live_server.url}{url}")
        assert page.locator("#runs-table tbody tr").count() == 6
        assert overflow_px(page) == 0, url
        scroll = page.locator("#runs-scroll")
        assert scroll.evaluate("el => el.scrollWidth > el.clientWidth"), "the table scrolls inside its box"
    page.goto(f"{live_server.url}/p/demo/runs?status=nope")
    assert "status" in page.locator("#runs-error").inner_text()
    assert overflow_px(page) == 0
    assert violations == []
    context.close()
