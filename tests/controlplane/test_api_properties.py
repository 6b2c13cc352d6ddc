"""A property test of the API against its own OpenAPI schema (schemathesis): whatever the
schema allows a client to send, and much it does not, no operation answers 5xx.

Every operation of the published schema (/api/v1/schema, the people's API) is called with
inputs Hypothesis generates, with alice's API token.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from controlplane.accounts.models import TokenScope
from controlplane.accounts.services import api_token_create

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def in_the_tests_transaction(db):
    """As Django's test client does: the requests run inside the test's transaction, so they
    must not close its connection when they finish."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def alice_token(people) -> str:
    return api_token_create(user=people["alice"], name="properties", scopes=list(TokenScope))[1]


# Read once, when the module is collected: generating the schema reads no database.
# Left out: what schemathesis cannot generate (it says UnsupportedSchema): the training
# config's tagged unions in the bodies of jobs, estimates and sweeps, and the raw bytes of
# an upload's piece. tests/controlplane/test_bad_inputs.py sends those endpoints bad bodies.
schema = (
    schemathesis.openapi.from_wsgi("/api/v1/schema?format=json", get_wsgi_application())
    .exclude(method="POST", path=["/api/v1/jobs", "/api/v1/jobs/estimate", "/api/v1/sweeps"])
    .exclude(method="PATCH", path="/api/v1/uploads/{upload_id}")
)


@schema.parametrize()
@hypothesis_settings(
    max_examples=5,
    deadline=None,
    derandomize=True,  # the same inputs on every run: a failure here is a failure next time
    suppress_health_check=list(HealthCheck),
)
def test_no_input_makes_the_api_answer_5xx(case, alice_token):
    response = case.call(headers={"Authorization": f"Token {alice_token}"})
    assert response.status_code < 500, (
        case.method,
        case.formatted_path,
        response.status_code,
        response.text[:500],
    )
