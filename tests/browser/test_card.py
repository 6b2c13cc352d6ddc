"""The model card's page in Chromium, at 1440 and 390 px: every part of the card shown, the
override reason escaped, no CSP violation, nothing wider than a phone."""

from __future__ import annotations

import pytest
from django.utils import timezone

from controlplane.evidence import cards, digests
from controlplane.evidence.models import GateCheck, ReviewVote
from controlplane.registry.models import Deployment, ModelVersion, Promotion, PromotionStatus
from controlplane.training.models import Job, JobStatus
from tests.browsing import DESKTOP, PHONE, csp_violations, log_in, overflow_px, screenshot
from tests.controlplane.evidence.test_cards import _checks_run, _suite_runs
from tests.factories import job_make, model_version_make, promotion_make

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

REASON = "Exact match gained 6 points; the <b>rougeL</b> drop of 2 is within what support accepts."


def _card_of_an_overridden_approval(people) -> Promotion:
    alice, carol = people["alice"], people["carol"]
    champion = model_version_make(job_make(people["demo"], alice), alice, name="support-bot")
    job = job_make(
        people["demo"],
        alice,
        config={"hyperparameters": {"learning_rate": 2e-4, "max_steps": 300, "batch_size": 8}},
    )
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.SUCCEEDED,
        mlflow_run_id="9f1c2e7ab4d84c61a0e5f3b2c1d0e9f8",
        metrics={"train_loss": 0.4213, "eval_loss": 0.5127},
        finished_at=timezone.now(),
    )
    job.refresh_from_db()
    version = ModelVersion.objects.create(
        project=people["demo"],
        name="support-bot",
        version=2,
        job=job,
        source_uri=f"runs:/{job.mlflow_run_id}/adapter",
        mlflow_name="demo.support-bot",
        created_by=alice,
    )
    earlier = promotion_make(champion, alice)
    Promotion.objects.filter(pk=earlier.pk).update(
        status=PromotionStatus.APPROVED, decided_by=carol, decided_at=timezone.now()
    )
    Deployment.objects.create(
        project=people["demo"],
        model_name="support-bot",
        target="production",
        model_version=champion,
        promotion=earlier,
        approved_by=carol,
        approved_at=timezone.now(),
    )
    promotion = promotion_make(version, alice)
    _checks_run(job, alice)
    _suite_runs(people["demo"], alice, version, champion)
    for row, vote in enumerate(("a", "a", "b", "tie", "a")):
        ReviewVote.objects.create(
            promotion=promotion, task="qa", row=row, voter=carol, challenger_side="a", vote=vote
        )
    Promotion.objects.filter(pk=promotion.pk).update(
        status=PromotionStatus.APPROVED,
        decided_by=carol,
        decided_at=timezone.now(),
        decision_comment="Ship it; watch the escalation rate.",
        override_reason=REASON,
    )
    results = {
        "rules": [
            {"label": "qa exact_match ≥ champion − 1 point", "status": "pass", "figures": "0.61 vs 0.55"},
            {"label": "qa rougeL ≥ champion − 1 point", "status": "fail", "figures": "0.50 vs 0.52"},
            {"label": "no contamination", "status": "pass", "figures": "0 of 40 rows"},
        ]
    }
    GateCheck.objects.create(
        promotion=promotion, passed=False, results=results, digest=digests.digest_of(results)
    )
    cards.model_card_write(
        promotion_id=promotion.pk,
        libraries={"python": "3.12.3", "torch": "2.13.0", "transformers": "5.24.0", "peft": "0.18.0"},
    )
    return promotion


def test_the_model_card_page_at_desktop_and_phone_widths(browser, people, live_server):
    from playwright.sync_api import expect

    promotion = _card_of_an_overridden_approval(people)
    card = promotion.card
    context = browser.new_context(viewport=DESKTOP)
    violations = csp_violations(context)
    page = context.new_page()
    page.set_default_timeout(20_000)
    log_in(page, live_server.url, "viv")
    page.goto(f"{live_server.url}/p/demo/promotions/{promotion.pk}/card")

    expect(page.locator("h1")).to_have_text("Model card: support-bot v2")
    expect(page.locator("#card-digest")).to_have_text(card.digest)
    expect(page.locator("#card-model")).to_contain_text("v1")  # the champion it replaces
    expect(page.locator("#card-training")).to_contain_text("learning_rate")
    expect(page.locator("#card-data")).to_contain_text(card.data["datasets"][0]["sha256"])
    expect(page.locator("#card-data")).to_contain_text("email in 1 row (of 3 rows)")
    expect(page.locator("#card-suites tr", has_text="exact_match").first).to_contain_text("0.06")
    expect(page.locator("#card-review")).to_contain_text("0.7")  # (3 + 1/2) / 5
    expect(page.locator("#card-gate")).to_contain_text("failed")
    # The reason is shown as written, markup and all, never interpreted.
    expect(page.locator("#card-override")).to_contain_text("the <b>rougeL</b> drop")
    expect(page.locator("#card-override b")).to_have_count(0)
    expect(page.locator("#card-libraries")).to_contain_text("5.24.0")
    screenshot(page, "model-card.png")

    markdown = page.request.get(f"{live_server.url}/api/v1/promotions/{promotion.pk}/card?format=markdown")
    assert markdown.ok and markdown.text() == card.markdown

    phone = context.new_page()
    phone.set_viewport_size(PHONE)
    phone.goto(page.url)
    expect(phone.locator("#card-suites")).to_be_visible()
    assert overflow_px(phone) == 0
    screenshot(phone, "model-card-phone.png")
    assert not violations, violations
    context.close()
