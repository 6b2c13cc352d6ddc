"""The well-known development worker token works only on a laptop, from loopback."""

from __future__ import annotations

import logging

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db
DEV_TOKEN = "dev-worker-token"


def _claim(token: str, address: str) -> object:
    # No job 999999999: a 404 means the worker token was taken.
    return Client(REMOTE_ADDR=address).post(
        "/internal/v1/jobs/999999999/claim",
        {"attempt": 1, "worker": "w1"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )


def test_the_development_worker_token_is_refused_off_a_laptop_with_a_warning(settings, caplog):
    settings.WORKER_TOKEN = DEV_TOKEN
    settings.LAPTOP_MODE = False

    with caplog.at_level(logging.WARNING, logger="controlplane.api_common"):
        refused = _claim(DEV_TOKEN, "127.0.0.1")

    assert refused.status_code == 401
    assert refused.json() == {
        "error": "authentication_failed",
        "message": "The development worker token works only on a laptop, from loopback: set WORKER_TOKEN.",
    }
    [warning] = [r for r in caplog.records if r.name == "controlplane.api_common"]
    assert warning.levelno == logging.WARNING and "Set WORKER_TOKEN" in warning.getMessage()
    # A token of the deployment's own works from anywhere, and then the development one nowhere.
    settings.WORKER_TOKEN = "a-secret-of-this-deployment"
    assert _claim("a-secret-of-this-deployment", "10.0.0.7").status_code == 404
    assert _claim(DEV_TOKEN, "127.0.0.1").status_code == 401


def test_on_a_laptop_the_development_worker_token_works_from_loopback_only(settings):
    settings.WORKER_TOKEN = DEV_TOKEN
    settings.LAPTOP_MODE = True

    assert _claim(DEV_TOKEN, "127.0.0.1").status_code == 404
    assert _claim(DEV_TOKEN, "::1").status_code == 404
    assert _claim(DEV_TOKEN, "192.168.1.20").status_code == 401
    assert _claim(DEV_TOKEN, "not-an-address").status_code == 401
