"""The live sweep page in Chromium: a refreshed panel looks like a fresh load (toolbars a single row,
titles and legends inside their cards), its actions follow the sweep's status, and it fits a phone."""

from __future__ import annotations

import pytest
from django.db import connection

from controlplane.sweeps.models import Sweep, SweepStatus
from tests.broker import queue_clear
from tests.browsing import DESKTOP, PHONE, csp_violations, log_in, overflow_px, screenshot
from tests.controlplane.sweeps.test_sweeps import QUEUE, run_trial, running_trials, sweep_body
from tests.factories import base_model_make, dataset_version_make

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def optuna_storage(settings, tmp_path, redis_url):
    if connection.vendor != "postgresql":
        settings.OPTUNA_STORAGE_URL = f"sqlite:///{tmp_path / 'optuna.sqlite3'}"
    queue_clear(redis_url, QUEUE)
    yield
    queue_clear(redis_url, QUEUE)


@pytest.fixture
def inputs(people):
    return {
        "base_model": base_model_make(people["demo"]).pk,
        "dataset_version": dataset_version_make(people["demo"], people["alice"]).pk,
    }


# What the page looks like after each refresh: the height of every chart's toolbar, and how far any
# chart title or legend sticks out of its card (0 when inside).
GEOMETRY = """() => Array.from(document.querySelectorAll('.sweep-chart'))
  .filter((el) => !el.closest('[hidden]'))
  .map((el) => {
    const card = el.closest('.card').getBoundingClientRect();
    const bar = el.querySelector('.modebar');
    const out = (node) => {
      const r = node.getBoundingClientRect();
      return Math.max(0, card.top - r.top, r.bottom - card.bottom, card.left - r.left, r.right - card.right);
    };
    const parts = Array.from(el.querySelectorAll('.gtitle, .legend, .infolayer .g-xtitle'));
    return {
      id: el.id,
      drawn: !!el.querySelector('.main-svg'),
      toolbar: bar ? bar.getBoundingClientRect().height : 0,
      groups: el.querySelectorAll('.modebar-group').length,
      outside: Math.max(0, ...parts.map(out)),
    };
  })"""


def _sweep_with_finished_trials(api_for, inputs) -> int:
    body = sweep_body(inputs, n_trials=4, parallelism=1, pruner="none")
    sweep_id = api_for("alice").post("/api/v1/sweeps", body, format="json").json()["id"]
    for losses in ([2.0, 1.4, 1.1, 0.9], [2.1, 1.2, 0.8, 0.5]):
        run_trial(running_trials(sweep_id)[0].job, losses=losses)
    return sweep_id


def _refreshes(page, count: int) -> None:
    """Wait for ``count`` more htmx refreshes of the live panel (and for their charts to settle)."""
    page.evaluate(
        """(count) => new Promise((done) => {
             let seen = 0;
             document.body.addEventListener('htmx:afterSettle', () => {
               if (++seen >= count) setTimeout(done, 400);
             });
           })""",
        count,
    )


def test_a_refreshed_sweep_panel_looks_like_a_fresh_load_and_its_actions_follow_its_status(
    browser,
    people,
    live_server,
    api_for,
    inputs,
    settings,
):
    from playwright.sync_api import expect

    settings.SWEEP_REFRESH_SECONDS = 1
    sweep_id = _sweep_with_finished_trials(api_for, inputs)
    context = browser.new_context(viewport=DESKTOP)
    violations = csp_violations(context)
    page = context.new_page()
    page.set_default_timeout(20_000)
    log_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/sweeps/{sweep_id}/")
    expect(page.locator("#chart-history .main-svg").first).to_be_visible()
    fresh = page.evaluate(GEOMETRY)
    assert fresh and all(chart["drawn"] for chart in fresh), fresh

    _refreshes(page, 2)
    refreshed = page.evaluate(GEOMETRY)
    assert [c["id"] for c in refreshed] == [c["id"] for c in fresh]
    for before, after in zip(fresh, refreshed, strict=True):
        # One row of icons, as on a fresh load, not a column of them.
        assert after["drawn"] and after["toolbar"] <= 40, (before, after)
        assert after["toolbar"] == pytest.approx(before["toolbar"], abs=2), (before, after)
        assert after["outside"] <= 1, after
    assert page.locator("#sweep-actions button", has_text="Pause").count() == 1
    assert page.get_by_role("link", name="Demo").first.is_visible()  # the way back to its project

    # It finishes while the page is open: the next refresh takes Pause and Stop away, no reload.
    for losses in ([2.0, 1.5, 1.2, 1.0], [1.9, 1.3, 1.0, 0.7]):
        run_trial(running_trials(sweep_id)[0].job, losses=losses)
    assert Sweep.objects.get(pk=sweep_id).status == SweepStatus.FINISHED
    expect(page.locator("#sweep-status")).to_have_text("finished")
    expect(page.locator("#sweep-actions button", has_text="Pause")).to_have_count(0)
    expect(page.locator("#sweep-actions button", has_text="Stop")).to_have_count(0)
    assert all(c["outside"] <= 1 and c["toolbar"] <= 40 for c in page.evaluate(GEOMETRY))
    compare = page.get_by_role("link", name="Compare trials")
    if compare.count():  # the compare page exists once its helper's part is in
        assert "runs=" in compare.get_attribute("href")
    screenshot(page, "sweep.png")

    phone = context.new_page()
    phone.set_viewport_size(PHONE)
    phone.goto(f"{live_server.url}/sweeps/{sweep_id}/")
    expect(phone.locator("#chart-history .main-svg").first).to_be_visible()
    assert overflow_px(phone) == 0
    phone.goto(f"{live_server.url}/p/demo/sweeps/new")
    assert overflow_px(phone) == 0
    assert not violations, violations
    context.close()
