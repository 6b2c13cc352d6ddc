"""Every list of the API pages the same way: {"results", "next"}, ``limit`` and a ``cursor``."""

from __future__ import annotations

import pytest

from tests.factories import base_model_make, dataset_version_make

pytestmark = pytest.mark.django_db


def _walk(client, url: str) -> list[list[int]]:
    pages = []
    while url:
        body = client.get(url).json()
        pages.append([row["id"] for row in body["results"]])
        url = body["next"]
    return pages


def test_a_list_walked_page_by_page_gives_every_row_once_in_order(people, api_for):
    models = [base_model_make(people["demo"]) for _ in range(5)]
    versions = [dataset_version_make(people["demo"], people["alice"]) for _ in range(3)]
    alice = api_for("alice")
    assert _walk(alice, "/api/v1/base-models?project=demo&limit=2") == [
        [models[0].pk, models[1].pk],
        [models[2].pk, models[3].pk],
        [models[4].pk],
    ]
    # Newest first where a list is a history.
    assert _walk(alice, "/api/v1/datasets?project=demo&limit=2") == [
        [versions[2].pk, versions[1].pk],
        [versions[0].pk],
    ]
    # A row added between two pages neither shifts nor repeats the next one.
    first = alice.get("/api/v1/base-models?project=demo&limit=2").json()
    late = base_model_make(people["demo"])
    rest = _walk(alice, first["next"])
    assert sum(rest, []) == [models[2].pk, models[3].pk, models[4].pk, late.pk]


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=two", "cursor=abc", "cursor=-1"])
def test_a_bad_limit_or_cursor_is_a_400_naming_it(people, api_for, query):
    answer = api_for("alice").get(f"/api/v1/base-models?project=demo&{query}")
    assert answer.status_code == 400
    assert answer.json()["message"].startswith(query.split("=")[0])
