"""The registry's pages over Django's test client: a model, a version with its lineage, a promotion
with its actions; an outsider gets 404 everywhere, a bad form is a message and changes nothing."""

from __future__ import annotations

import pytest
from django.test import Client

from controlplane.registry.models import Promotion, PromotionComment, PromotionKind, PromotionStatus
from tests.controlplane.registry.registry_rows import NAME, history_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def history(people):
    return history_make(people)


def _as(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def test_the_model_page_shows_versions_the_champion_the_history_and_rollback_choices(people, history):
    page = _as(people["bob"]).get(f"/p/demo/models/{NAME}")
    assert page.status_code == 200
    html = page.content.decode()
    targets = {t["value"]: t for t in page.context["targets"]}
    assert targets["production"]["champion"].model_version == history.versions[1]
    assert [p.model_version.version for p in targets["production"]["history"]] == [1, 2]
    assert targets["production"]["rollback_choices"] == [history.versions[0]]
    assert f'href="/p/demo/promotions/{history.open_request.pk}"' in html
    assert 'name="version"' in html and "Request rollback" in html
    assert "Roll back now" not in html  # an emergency is an admin's
    assert _as(people["viv"]).get(f"/p/demo/models/{NAME}").status_code == 200
    assert _as(people["bob"]).get("/p/demo/models/no-such-model").status_code == 404


def test_the_version_page_draws_the_lineage_from_data_with_hashes_and_checks_to_deployments(people, history):
    version = history.versions[1]
    page = _as(people["viv"]).get(f"/p/demo/models/{NAME}/2")
    assert page.status_code == 200
    html = page.content.decode()
    training = version.job.dataset_version
    for column in (
        "lineage-data",
        "lineage-job",
        "lineage-evaluations",
        "lineage-version",
        "lineage-deployments",
    ):
        assert f'id="{column}"' in html
    assert f"sha256 {training.sha256[:12]}" in html
    assert "2 of 60 rows found here" in html  # the quiz's contamination check against this data
    assert "email in 1 rows" in html  # its PII scan
    assert "learning rate" in html and "0.0003" in html
    assert f'href="/p/demo/promotions/{history.approved[1].pk}"' in html
    assert _as(people["viv"]).get(f"/p/demo/models/{NAME}/9").status_code == 404


def test_the_promotion_page_shows_the_request_its_actions_and_its_audit(people, history):
    url = f"/p/demo/promotions/{history.open_request.pk}"
    as_carol = _as(people["carol"]).get(url).content.decode()
    assert 'id="approve-form"' in as_carol and "Withdraw my request" not in as_carol
    as_alice = _as(people["alice"]).get(url).content.decode()
    assert 'id="approve-form"' not in as_alice and "Withdraw my request" in as_alice
    assert "ready for staging" in as_alice and 'id="audit"' in as_alice
    # Under another project's address, it is not there.
    assert _as(people["alice"]).get(f"/p/other/promotions/{history.open_request.pk}").status_code == 404


def test_comments_and_withdraw_from_the_page(people, history):
    promotion = history.open_request
    url = f"/p/demo/promotions/{promotion.pk}"
    empty = _as(people["viv"]).post(
        f"/promotions/{promotion.pk}/comments",
        {"body": "  "},
        follow=True,
        HTTP_REFERER=f"http://testserver{url}",
    )
    assert "cannot be empty" in " ".join(_messages(empty)) and not PromotionComment.objects.exists()
    _as(people["viv"]).post(f"/promotions/{promotion.pk}/comments", {"body": "which suite?", "next": url})
    refused = _as(people["bob"]).post(f"/promotions/{promotion.pk}/withdraw", {"next": url})
    assert refused.status_code == 403

    done = _as(people["alice"]).post(f"/promotions/{promotion.pk}/withdraw", {"next": url}, follow=True)

    assert done.redirect_chain[-1][0] == url
    assert Promotion.objects.get(pk=promotion.pk).status == PromotionStatus.WITHDRAWN
    assert "which suite?" in done.content.decode()


def test_a_rollback_request_from_the_model_page_and_its_bad_forms(people, history):
    back = f"/p/demo/models/{NAME}"
    for bad in ({"version": "x"}, {"version": str(history.versions[1].pk)}, {}):
        answer = _as(people["bob"]).post(
            "/rollbacks",
            {"target": "production", **bad},
            follow=True,
            HTTP_REFERER=f"http://testserver{back}",
        )
        assert answer.status_code == 200 and _messages(answer), bad
    outsider = _as(people["charlie"]).post(
        "/rollbacks", {"target": "production", "version": str(history.versions[0].pk)}
    )
    assert outsider.status_code == 404
    assert not Promotion.objects.filter(kind=PromotionKind.ROLLBACK).exists()

    asked = _as(people["bob"]).post(
        "/rollbacks", {"target": "production", "version": str(history.versions[0].pk), "next": back}
    )

    assert asked.status_code == 302 and asked["Location"] == back
    rollback = Promotion.objects.get(kind=PromotionKind.ROLLBACK)
    assert (rollback.model_version, rollback.requested_by) == (history.versions[0], people["bob"])


def test_an_outsider_gets_404_on_every_registry_page(people, history):
    charlie = _as(people["charlie"])
    for url in (
        f"/p/demo/models/{NAME}",
        f"/p/demo/models/{NAME}/1",
        f"/p/demo/promotions/{history.open_request.pk}",
        f"/p/other/promotions/{history.open_request.pk}",
    ):
        assert charlie.get(url).status_code == 404, url
    for action in ("withdraw", "comments", "approve", "reject"):
        assert (
            charlie.post(f"/promotions/{history.open_request.pk}/{action}", {"body": "x"}).status_code == 404
        )
