"""List endpoints cost a fixed number of queries, however many rows they return (no N+1)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.factories import job_make, model_version_make

pytestmark = pytest.mark.django_db

LISTS = [
    "/api/v1/jobs?project=demo",
    "/api/v1/datasets?project=demo",
    "/api/v1/base-models?project=demo",
    "/api/v1/model-versions?project=demo",
    "/api/v1/promotions?project=demo",
]


def _queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def test_list_endpoints_do_not_query_per_row(people, api_for):
    client = api_for("alice")
    job = job_make(people["demo"], people["alice"])
    model_version_make(job, people["alice"], name="one")
    few = {url: _queries(client, url) for url in LISTS}
    for n in range(5):
        more = job_make(people["demo"], people["bob"])
        model_version_make(more, people["bob"], name=f"more-{n}")
    many = {url: _queries(client, url) for url in LISTS}
    assert many == few
