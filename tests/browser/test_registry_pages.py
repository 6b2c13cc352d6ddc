"""The registry's pages in Chromium: a promotion request (an approver's actions, a comment added from
the page, the audit trail), a registered model (champion, history, rollback) and a version with its
lineage graph, at 1440 and 390 px, with no Content-Security-Policy violation and nothing wider than
the screen (the lineage scrolls inside its own box)."""

from __future__ import annotations

import pytest

from controlplane.registry.models import PromotionComment, PromotionStatus
from tests.browsing import DESKTOP, PHONE, csp_violations, log_in, overflow_px, screenshot
from tests.controlplane.registry.registry_rows import NAME, history_make

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_promotion_model_and_version_pages_work_on_a_desktop_and_a_phone(browser, live_server, people):
    from playwright.sync_api import expect

    history = history_make(people)
    promotion_url = f"{live_server.url}/p/demo/promotions/{history.open_request.pk}"
    model_url = f"{live_server.url}/p/demo/models/{NAME}"
    version_url = f"{model_url}/2"

    context = browser.new_context(viewport=DESKTOP)
    violations = csp_violations(context)
    page = context.new_page()
    page.set_default_timeout(20_000)
    log_in(page, live_server.url, "carol")

    # Reached from the models page, as an approver finds it.
    page.goto(f"{live_server.url}/p/demo/models")
    page.locator("#promotions").get_by_role("link", name="Evidence & comments").click()
    expect(page.locator("h1")).to_contain_text(f"{NAME} v2")
    expect(page.locator("#approve-form button.primary")).to_have_text("Approve")
    page.locator("#comments textarea[name=body]").fill("Which suite did you run?")
    page.locator("#comments button", has_text="Comment").click()
    expect(page.locator("#comments .comment")).to_contain_text("Which suite did you run?")
    assert PromotionComment.objects.get().author == people["carol"]
    expect(page.locator("#audit tbody tr")).to_have_count(1)
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header then sits at the top of the picture
    screenshot(page, "promotion.png")

    page.goto(model_url)
    expect(page.locator('#champions [data-target="production"]')).to_contain_text("v2")
    expect(page.locator("#history-production tbody tr")).to_have_count(2)
    expect(page.locator('#history-production select[name="version"] option')).to_have_text(["v1"])
    screenshot(page, "model.png")

    page.goto(version_url)
    lineage = page.locator(".lineage")
    expect(lineage.locator(".lineage-col")).to_have_count(5)
    expect(page.locator("#lineage-data")).to_contain_text("sha256")
    expect(page.locator("#lineage-deployments .node.current")).to_contain_text("Production")
    # Left to right: data, job, evaluations, version, deployments.
    xs = [box["x"] for box in (c.bounding_box() for c in lineage.locator(".lineage-col").all())]
    assert xs == sorted(xs), xs
    screenshot(page, "model_version.png")

    phone = context.new_page()
    phone.set_viewport_size(PHONE)
    for url in (promotion_url, model_url, version_url):
        phone.goto(url)
        expect(phone.locator("h1")).to_be_visible()
        assert overflow_px(phone) == 0, url
    # On the phone the lineage scrolls sideways inside its card instead of widening the page.
    widths = phone.evaluate(
        "() => { const l = document.querySelector('.lineage'); return [l.scrollWidth, l.clientWidth]; }"
    )
    assert widths[0] > widths[1], widths
    screenshot(phone, "model_version_phone.png")

    # The requester withdraws her own request from the page.
    alice = browser.new_context(viewport=PHONE)
    alice_violations = csp_violations(alice)
    mine = alice.new_page()
    mine.set_default_timeout(20_000)
    log_in(mine, live_server.url, "alice")
    mine.goto(promotion_url)
    expect(mine.locator("#approve-form")).to_have_count(0)
    mine.locator("#withdraw-form button").click()
    expect(mine.locator("#promotion-status")).to_have_text("Withdrawn")
    history.open_request.refresh_from_db()
    assert history.open_request.status == PromotionStatus.WITHDRAWN
    assert overflow_px(mine) == 0

    assert not violations and not alice_violations, violations + alice_violations
    context.close()
    alice.close()
