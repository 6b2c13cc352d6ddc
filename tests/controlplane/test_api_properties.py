"""A property test of the API against its own OpenAPI schema (schemathesis): whatever the
schema allows a client to send, and much it does not, no operation answers 5xx, and every
answer keeps to the schema (a documented status, content type and body).

Every operation of the published schema (/api/v1/schema, the people's API) is called with
inputs Hypothesis generates, with alice's API token.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, strategies
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

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


# An upload's piece is raw bytes (the tus-style PATCH): any bytes, a few KB at most.
schemathesis.openapi.media_type("application/offset+octet-stream", strategies.binary(max_size=4096))

# Read once, when the module is collected: generating the schema reads no database.
schema = schemathesis.openapi.from_wsgi("/api/v1/schema?format=json", get_wsgi_application())
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@schema.parametrize()
@hypothesis_settings(
    max_examples=5,
    deadline=None,
    derandomize=True,  # the same inputs on every run: a failure here is a failure next time
    suppress_health_check=list(HealthCheck),
)
def test_no_input_makes_the_api_answer_5xx_or_break_its_schema(case, alice_token):
    case.call_and_validate(headers={"Authorization": f"Token {alice_token}"}, checks=CHECKS)
