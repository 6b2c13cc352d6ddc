"""A model version and a promotion are addressable by id, as a pipeline polls them."""

from __future__ import annotations

import pytest

from tests.factories import job_make, model_version_make, promotion_make

pytestmark = pytest.mark.django_db


def test_a_model_version_and_a_promotion_read_by_id(people, api_for):
    version = model_version_make(job_make(people["demo"], people["alice"]), people["alice"])
    promotion = promotion_make(version, people["alice"])
    viewer = api_for("viv")

    read_version = viewer.get(f"/api/v1/model-versions/{version.pk}")
    read_promotion = viewer.get(f"/api/v1/promotions/{promotion.pk}")

    assert read_version.status_code == 200 and read_version.json()["id"] == version.pk
    assert read_version.json()["name"] == version.name
    assert read_promotion.status_code == 200 and read_promotion.json()["id"] == promotion.pk
    assert read_promotion.json()["status"] == promotion.status
    # Another project's, or none: the same 404.
    charlie = api_for("charlie")
    assert (
        charlie.get(f"/api/v1/promotions/{promotion.pk}").json()
        == charlie.get("/api/v1/promotions/999999").json()
    )
    assert charlie.get(f"/api/v1/model-versions/{version.pk}").status_code == 404
