"""Reading a model card: the REST API (JSON or Markdown), its page, its part of the promotion page."""

from __future__ import annotations

import pytest
from django.template.loader import render_to_string
from django.test import Client
from django.utils import timezone

from controlplane.evidence import cards, digests
from controlplane.evidence.models import ModelCard
from controlplane.registry.models import Deployment, Promotion, PromotionStatus
from tests.factories import job_make, model_version_make, promotion_make

pytestmark = pytest.mark.django_db


def _approved(people, *, reason: str = "") -> Promotion:
    """A promotion approved by carol, deployed, with its card: as the approval leaves them."""
    job = job_make(people["demo"], people["alice"])
    version = model_version_make(job, people["alice"], name="tiny")
    promotion = promotion_make(version, people["alice"])
    now = timezone.now()
    Promotion.objects.filter(pk=promotion.pk).update(
        status=PromotionStatus.APPROVED, decided_by=people["carol"], decided_at=now, override_reason=reason
    )
    cards.model_card_write(promotion_id=promotion.pk, libraries={"torch": "2.13.0"})
    Deployment.objects.create(
        project=people["demo"],
        model_name="tiny",
        target="production",
        model_version=version,
        promotion=promotion,
        approved_by=people["carol"],
        approved_at=now,
    )
    return promotion


def test_a_promotions_card_is_json_by_default(people, api_for):
    promotion = _approved(people)
    card = ModelCard.objects.get(promotion=promotion)
    answer = api_for("viv").get(f"/api/v1/promotions/{promotion.pk}/card")
    assert answer.status_code == 200 and answer["Content-Type"] == "application/json"
    body = answer.json()
    assert body["digest"] == card.digest == digests.digest_of(body["card"])
    assert (body["promotion"], body["project"], body["model_name"], body["target"]) == (
        promotion.pk,
        "demo",
        "tiny",
        "production",
    )
    assert body["card"]["libraries"] == {"torch": "2.13.0"}


@pytest.mark.parametrize(
    "query, headers",
    [("?format=markdown", {}), ("", {"HTTP_ACCEPT": "text/markdown"})],
    ids=["format-parameter", "accept-header"],
)
def test_a_card_is_markdown_when_asked(people, api_for, query, headers):
    promotion = _approved(people)
    answer = api_for("alice").get(f"/api/v1/promotions/{promotion.pk}/card{query}", **headers)
    assert answer.status_code == 200
    assert answer["Content-Type"] == "text/markdown; charset=utf-8"
    assert answer.content.decode() == ModelCard.objects.get(promotion=promotion).markdown


def test_the_card_of_what_is_deployed(people, api_for):
    promotion = _approved(people)
    client = api_for("bob")
    answer = client.get("/api/v1/deployments/production/card", {"project": "demo", "model": "tiny"})
    assert answer.status_code == 200 and answer.json()["promotion"] == promotion.pk
    markdown = client.get(
        "/api/v1/deployments/production/card", {"project": "demo", "model": "tiny", "format": "markdown"}
    )
    assert markdown.content.decode().startswith("# Model card: tiny v1")


@pytest.mark.parametrize(
    "url, status, message",
    [
        ("/api/v1/deployments/production/card?project=demo", 400, "model"),
        ("/api/v1/deployments/production/card?model=tiny", 400, "project"),
        ("/api/v1/deployments/mars/card?project=demo&model=tiny", 400, "Unknown target"),
        ("/api/v1/deployments/staging/card?project=demo&model=tiny", 404, "deployed"),
        ("/api/v1/deployments/production/card?project=demo&model=other", 404, "deployed"),
        ("/api/v1/deployments/production/card?project=demo&model=tiny&format=xml", 400, "format"),
        ("/api/v1/deployments/production/card?project=demo&model=tiny&extra=1", 400, "extra"),
        ("/api/v1/promotions/{id}/card?format=pdf", 400, "format"),
    ],
)
def test_bad_card_requests_are_refused_with_a_message(people, api_for, url, status, message):
    promotion = _approved(people)
    answer = api_for("alice").get(url.replace("{id}", str(promotion.pk)))
    assert answer.status_code == status, answer.content
    if status >= 400:
        assert answer["Content-Type"] == "application/json"
        assert message in answer.json()["message"]


def test_no_card_before_approval_is_a_404_in_json_whatever_the_format(people, api_for):
    promotion = promotion_make(
        model_version_make(job_make(people["demo"], people["alice"]), people["alice"]), people["alice"]
    )
    for query in ("", "?format=markdown"):
        answer = api_for("alice").get(f"/api/v1/promotions/{promotion.pk}/card{query}")
        assert answer.status_code == 404 and answer.json()["error"] == "not_found"


def test_charlie_reads_no_card_of_another_project_and_learns_nothing(people, api_for):
    promotion = _approved(people)
    charlie = api_for("charlie")
    theirs = charlie.get(f"/api/v1/promotions/{promotion.pk}/card")
    absent = charlie.get(f"/api/v1/promotions/{promotion.pk + 1000}/card")
    assert theirs.status_code == absent.status_code == 404 and theirs.json() == absent.json()
    deployed = charlie.get("/api/v1/deployments/production/card", {"project": "demo", "model": "tiny"})
    assert deployed.status_code == 404
    no_project = charlie.get("/api/v1/deployments/production/card", {"project": "nope", "model": "tiny"})
    assert deployed.json() == no_project.json()


def _signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_card_page_shows_the_card_escaped(people):
    promotion = _approved(people, reason="<script>alert(1)</script> urgent fix")
    card = ModelCard.objects.get(promotion=promotion)
    page = _signed_in(people["viv"]).get(f"/p/demo/promotions/{promotion.pk}/card")
    assert page.status_code == 200
    html = page.content.decode()
    assert card.digest in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; urgent fix" in html and "<script>alert" not in html
    assert card.data["datasets"][0]["sha256"] in html
    assert "torch" in html and "2.13.0" in html


def test_the_card_page_is_a_404_for_outsiders_another_projects_slug_and_before_approval(people):
    promotion = _approved(people)
    assert _signed_in(people["charlie"]).get(f"/p/demo/promotions/{promotion.pk}/card").status_code == 404
    # charlie's own project in the address does not open demo's card either.
    assert _signed_in(people["charlie"]).get(f"/p/other/promotions/{promotion.pk}/card").status_code == 404
    open_request = promotion_make(
        model_version_make(job_make(people["demo"], people["alice"]), people["alice"], name="later"),
        people["alice"],
    )
    assert _signed_in(people["alice"]).get(f"/p/demo/promotions/{open_request.pk}/card").status_code == 404
    assert Client().get(f"/p/demo/promotions/{promotion.pk}/card").status_code == 302  # to the login page


def test_the_promotion_pages_part_says_what_the_card_holds_or_when_it_comes(people):
    promotion = _approved(people)
    card = ModelCard.objects.get(promotion=promotion)
    written = render_to_string("evidence/_card.html", {"card": card})
    assert card.digest in written and f"/p/demo/promotions/{promotion.pk}/card" in written
    assert "Written when the promotion is approved" in render_to_string("evidence/_card.html", {"card": None})
