"""The suite and gate pages in Chromium: a promotion's suite results against the champion and its
gate, a model's suites and gates, a suite run and the per-row predictions of a task (right / wrong),
at 1440 and 390 px, with no Content-Security-Policy violation and nothing wider than the screen."""

from __future__ import annotations

import json
import uuid

import pytest

from controlplane import tracking
from controlplane.evidence import gates, suite_results
from controlplane.evidence.models import SuiteRun
from controlplane.training.services import job_claim, job_finish
from tests.browsing import DESKTOP, PHONE, csp_violations, log_in, overflow_px, screenshot
from tests.controlplane.evidence.test_suites import deploy, suite_make, version_make
from tests.factories import promotion_make
from workers.spec import JobOutcome, JobResult

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROWS = [
    [0, "What is the capital of France?\nA. Paris\nB. London", "A", "A", 1.0],
    [1, "How many legs has a cat?\nA. two\nB. four", "A", "B", 0.0],
    [2, "Two plus three is\nA. five\nB. six", "A", "A", 1.0],
]


def _predictions(tmp_path) -> str:
    folder = tmp_path / uuid.uuid4().hex
    folder.mkdir()
    table = folder / "predictions.json"
    table.write_text(
        json.dumps({"columns": ["row", "input", "prediction", "reference", "score"], "data": ROWS})
    )
    return tracking.artifact_upload(
        table, experiment="tests/suites", run_name="eval", artifact_path="", tags={}
    )


def _finish(run: SuiteRun, metrics: dict[str, dict[str, float]], predictions: str = "") -> None:
    for link in run.task_jobs.select_related("job"):
        job_claim(job_id=link.job_id, attempt=1, worker="w1")
        artifacts = {"predictions": predictions} if predictions else {}
        job_finish(
            job_id=link.job_id,
            result=JobResult(
                attempt=1,
                worker="w1",
                outcome=JobOutcome.SUCCEEDED,
                metrics=metrics[link.task],
                artifacts=artifacts,
            ),
        )


def test_suite_results_gates_and_predictions_on_a_desktop_and_a_phone(
    browser, live_server, people, mlflow_server, tmp_path
):
    from playwright.sync_api import expect

    demo, alice = people["demo"], people["alice"]
    champion, challenger = version_make(demo, alice), version_make(demo, alice)
    suite = suite_make(people, champion)
    deploy(champion, people["carol"])
    rule = {
        "kind": "absolute",
        "suite": "core",
        "task": "quiz-0",
        "metric": "mc_acc",
        "op": ">=",
        "value": 0.8,
    }
    gates.gate_policy_set(
        project=demo, user=people["carol"], model_name=champion.name, target="production", rules=[rule]
    )
    promotion = promotion_make(challenger, alice)  # commits: the suite starts on both versions
    mine = SuiteRun.objects.get(suite=suite, model_version=challenger)
    theirs = SuiteRun.objects.get(suite=suite, model_version=champion)
    _finish(
        mine,
        {"quiz-0": {"mc_acc": 0.6667, "mc_acc_norm": 0.6667}, "quiz-1": {"mc_acc": 0.5, "mc_acc_norm": 0.5}},
        _predictions(tmp_path),
    )
    _finish(
        theirs,
        {"quiz-0": {"mc_acc": 0.7, "mc_acc_norm": 0.6}, "quiz-1": {"mc_acc": 0.4, "mc_acc_norm": 0.45}},
    )
    mine.refresh_from_db()
    assert (
        mine.status == "succeeded" and suite_results.suite_comparison(promotion=promotion)["pending"] is False
    )

    context = browser.new_context(viewport=DESKTOP)
    violations = csp_violations(context)
    page = context.new_page()
    page.set_default_timeout(20_000)
    log_in(page, live_server.url, "carol")

    promotion_url = f"{live_server.url}/p/demo/promotions/{promotion.pk}"
    page.goto(promotion_url)
    results = page.locator("#suite-results")
    expect(results.locator('tr[data-task="quiz-0"][data-metric="mc_acc"]')).to_contain_text("-0.0333")
    expect(results.locator('tr[data-task="quiz-1"][data-metric="mc_acc"] .delta.better')).to_have_text(
        "+0.1000"
    )
    expect(page.locator('#gates tr[data-rule="absolute"]')).to_have_attribute("data-status", "fail")
    expect(page.locator("#gates")).to_contain_text("mc_acc is 0.6667")
    screenshot(page, "promotion_gates.png")

    results.locator('tr[data-task="quiz-0"] a', has_text="rows").first.click()
    expect(page.locator("h1")).to_contain_text("quiz-0")
    expect(page.locator("#predictions tbody tr")).to_have_count(3)
    page.locator("#predictions a", has_text="wrong").click()
    expect(page.locator("#predictions tbody tr")).to_have_count(1)
    expect(page.locator('#predictions tr[data-row="1"]')).to_contain_text("How many legs")
    screenshot(page, "suite_predictions.png")

    page.goto(f"{live_server.url}/p/demo/suite-runs/{mine.pk}")
    expect(page.locator("#suite-run")).to_have_attribute("data-status", "succeeded")
    page.goto(f"{live_server.url}/p/demo/models/{champion.name}/suites")
    expect(page.locator("#suite-core tbody tr[data-run]")).to_have_count(2)
    # An approver edits the gate from the page; a broken rule is a message, not a change.
    gate = page.locator("#gate-production")
    gate.locator("textarea[name=rules]").fill('[{"kind": "absolute"}]')
    gate.locator("button", has_text="Save gate").click()
    expect(page.locator(".msg.error")).to_contain_text("rules.0")
    gate.locator("textarea[name=rules]").fill(json.dumps([{**rule, "value": 0.5}]))
    gate.locator("button", has_text="Save gate").click()
    expect(page.locator(".msg").first).to_contain_text("saved")
    screenshot(page, "suites.png")
    page.goto(promotion_url)
    expect(page.locator('#gates tr[data-rule="absolute"]')).to_have_attribute("data-status", "pass")

    phone = context.new_page()
    phone.set_viewport_size(PHONE)
    for url in (
        promotion_url,
        f"{live_server.url}/p/demo/models/{champion.name}/suites",
        f"{live_server.url}/p/demo/suite-runs/{mine.pk}",
        f"{live_server.url}/p/demo/suite-runs/{mine.pk}/tasks/quiz-0/predictions",
    ):
        phone.goto(url)
        expect(phone.locator("h1")).to_be_visible()
        assert overflow_px(phone) == 0, url
    screenshot(phone, "suites_phone.png")
    assert violations == []
    context.close()
