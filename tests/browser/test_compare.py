"""The compare page in Chromium, at 1440 and 390 px: one chart per metric with every run drawn, the
"only differences" toggle hiding equal parameters (and kept in the address), deltas against the
chosen baseline, no CSP violation, nothing wider than a phone."""

from __future__ import annotations

import math

import pytest

from controlplane.training.models import Job, JobMetricPoint, JobStatus
from tests.browsing import DESKTOP, PHONE, csp_violations, log_in, overflow_px, screenshot
from tests.factories import job_make

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

METRICS = ("loss", "eval_loss", "learning_rate", "grad_norm")


def _finished_runs(people) -> list[Job]:
    jobs = []
    for n, (lr, final) in enumerate(((3e-4, 0.8), (1e-4, 0.6), (5e-5, 0.9))):
        job = job_make(
            people["demo"],
            people["alice"],
            config={"hyperparameters": {"learning_rate": lr, "max_steps": 300}},
        )
        Job.objects.filter(pk=job.pk).update(
            name=f"lr-{lr:g}",
            status=JobStatus.SUCCEEDED,
            run_seconds=600.0,
            step=300,
            total_steps=300,
            progress=1.0,
            metrics={"train_loss": final, "eval_loss": final + 0.1},
        )
        JobMetricPoint.objects.bulk_create(
            JobMetricPoint(
                job=job,
                attempt=1,
                name=name,
                step=step,
                value={
                    "loss": 2.5 * math.exp(-step / (80 + 30 * n)) + final,
                    "eval_loss": 2.6 * math.exp(-step / (80 + 30 * n)) + final + 0.1,
                    "learning_rate": lr * (1 - step / 300) + 1e-7,
                    "grad_norm": 1 + 0.5 * math.sin(step / 7 + n),
                }[name],
            )
            for name in METRICS
            for step in range(1, 301, 3 if name != "eval_loss" else 30)
        )
        jobs.append(job)
    return jobs


def test_runs_are_compared_side_by_side_at_desktop_and_phone_widths(browser, people, live_server):
    from playwright.sync_api import expect

    jobs = _finished_runs(people)
    ids = ",".join(str(job.pk) for job in jobs)
    context = browser.new_context(viewport=DESKTOP)
    violations = csp_violations(context)
    page = context.new_page()
    page.set_default_timeout(20_000)
    log_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/compare/?runs={ids}")

    # Every metric charted, every run drawn in each.
    expect(page.locator("#charts")).to_have_attribute("data-drawn", str(len(METRICS)))
    for name in METRICS:
        chart = page.locator(f'.compare-chart[data-metric="{name}"]')
        expect(chart.locator(".main-svg").first).to_be_visible()
        expect(chart).to_have_attribute("data-traces", "3")

    # Only differences: the learning rate differs, the method does not.
    differing = page.locator("#param-table tr", has_text="hyperparameters.learning_rate")
    same = page.locator("#param-table tr", has_text="method.name")
    expect(differing).to_be_visible()
    expect(same).to_be_visible()
    page.locator("#only-diff").check()
    expect(same).to_be_hidden()
    expect(differing).to_be_visible()
    assert "diff=1" in page.url

    # Deltas against the first run, then against the second once it is the baseline.
    final = page.locator("#final-table")
    expect(final.locator("tr", has_text="train_loss")).to_contain_text("-0.2000")
    expect(final.locator("tr", has_text="train_loss").locator(".delta.better")).to_have_count(1)
    page.locator(f'input[name="baseline"][value="{jobs[1].pk}"]').check()
    page.wait_for_url(f"**baseline={jobs[1].pk}**")
    expect(page.locator("#final-table tr", has_text="train_loss")).to_contain_text("+0.2000")
    expect(page.locator("#param-table")).to_have_class("only-diff")  # kept across the reload
    expect(page.locator("#final-table tr", has_text="train_loss").locator(".delta.worse")).to_have_count(2)

    # Smoothing, log scale and the x axis redraw and go into the address.
    page.locator("#log-scale").check()
    page.locator("#x-axis").select_option("time")
    assert "log=1" in page.url and "x=time" in page.url
    expect(page.locator('.compare-chart[data-metric="loss"] .xtitle')).to_contain_text("seconds")
    expect(page.locator("#x-note")).to_contain_text("Tokens seen are not logged")
    screenshot(page, "compare.png")

    phone = context.new_page()
    phone.set_viewport_size(PHONE)
    phone.goto(page.url)
    expect(phone.locator('.compare-chart[data-metric="loss"] .main-svg').first).to_be_visible()
    assert overflow_px(phone) == 0
    phone.goto(f"{live_server.url}/compare/?runs={jobs[0].pk}")
    expect(phone.locator("#compare-error")).to_contain_text("Compare takes 2 to 10 different runs")
    assert overflow_px(phone) == 0
    assert not violations, violations
    context.close()


def test_an_outsider_sees_a_not_found_message(browser, people, live_server):
    jobs = _finished_runs(people)
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    log_in(page, live_server.url, "charlie")
    response = page.goto(f"{live_server.url}/compare/?runs={jobs[0].pk},{jobs[1].pk}")
    assert response.status == 404
    assert "was not found, or you cannot see it" in page.locator("#compare-error").inner_text()
    assert "lr-" not in page.content()
    context.close()
