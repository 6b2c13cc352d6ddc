"""The blind review in Chromium, at 1440 and 390 px: an approver votes on prompt cards, each card
swaps in place to show which side was the challenger, the tally and its interval follow, flips
appear once voted on; no CSP violation, nothing wider than a phone."""

from __future__ import annotations

import pytest

from controlplane.evidence import review_tally
from controlplane.evidence.models import ReviewVote
from tests.browsing import DESKTOP, PHONE, csp_violations, log_in, overflow_px, screenshot
from tests.controlplane.evidence.test_review import review_seed

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_approver_votes_blind_and_each_card_then_shows_its_sides(
    browser, people, live_server, mlflow_server
):
    from playwright.sync_api import expect

    promotion = review_seed(people)
    context = browser.new_context(viewport=DESKTOP)
    violations = csp_violations(context)
    page = context.new_page()
    page.set_default_timeout(20_000)
    log_in(page, live_server.url, "carol")
    page.goto(f"{live_server.url}/promotions/{promotion.pk}/review")

    cards = page.locator("article.review-prompt")
    expect(cards).to_have_count(8)
    expect(page.locator("[data-votes]")).to_have_text("0")
    expect(page.locator(".review-who")).to_have_count(0)  # no side is told before a vote
    expect(page.locator('[data-flips="right_to_wrong"]')).to_have_text("1")

    # Row 2 is the one the challenger got wrong: voting on it reveals it, and lists its flip.
    votes = {0: "A is better", 1: "Tie", 2: "B is better", 4: "A is better", 5: "B is better"}
    for row, button in votes.items():
        card = page.locator(f'article.review-prompt[data-row="{row}"]')
        card.get_by_role("button", name=button).click()
        expect(card.locator(".review-who")).to_have_count(2)
        expect(card.get_by_role("button", name="Tie")).to_have_count(0)
    expect(page.locator("[data-votes]")).to_have_text(str(len(votes)))
    expect(page.locator("#review-count")).to_contain_text(f"you voted on {len(votes)}")
    expect(page.locator('[data-judge="answers-judge"]')).to_contain_text(f"of {len(votes)} human votes")
    expect(page.locator('.review-flip-list [data-flip="right_to_wrong"]')).to_contain_text("row 2")

    side = {
        row: review_tally.challenger_side(promotion_id=promotion.pk, task="answers", row=row) for row in votes
    }
    card = page.locator('article.review-prompt[data-row="0"]')
    expect(card.locator(f'[data-side="{side[0]}"] .review-who')).to_have_attribute("data-who", "challenger")
    expect(card.locator(f'[data-side="{side[0]}"] .review-text')).to_contain_text("The answer is")

    verdicts = [
        review_tally.vote_verdict(vote=v.vote, challenger_side=v.challenger_side)
        for v in ReviewVote.objects.all()
    ]
    tally = review_tally.Tally.of(verdicts)
    expect(page.locator("[data-win-rate]")).to_have_text(f"{tally.rate_pct}%")
    expect(page.locator("svg.review-ci")).to_be_visible()
    screenshot(page, "review.png")

    # Reloaded, the same sides and the same votes.
    page.reload()
    expect(page.locator("article.review-prompt.revealed")).to_have_count(len(votes))

    phone = context.new_page()
    phone.set_viewport_size(PHONE)
    phone.goto(f"{live_server.url}/promotions/{promotion.pk}/review")
    open_card = phone.locator('article.review-prompt[data-row="3"]')
    open_card.get_by_role("button", name="Tie").click()
    expect(open_card.locator(".review-who")).to_have_count(2)
    assert overflow_px(phone) == 0
    screenshot(phone, "review-phone.png")

    # The promotion page carries the same review, votes and all.
    page.goto(f"{live_server.url}/p/demo/promotions/{promotion.pk}")
    embedded = page.locator("#review")
    expect(embedded.locator("article.review-prompt")).to_have_count(8)
    expect(embedded.locator("[data-votes]")).to_have_text(str(len(votes) + 1))
    last = embedded.locator('article.review-prompt[data-row="7"]')
    last.get_by_role("button", name="A is better").click()
    expect(last.locator(".review-who")).to_have_count(2)
    expect(embedded.locator("[data-votes]")).to_have_text(str(len(votes) + 2))
    assert not violations, violations
    context.close()
