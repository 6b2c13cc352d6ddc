"""Fixtures of the training tests."""

from __future__ import annotations

import pytest

from tests.broker import DISPATCH_QUEUE, queue_clear


@pytest.fixture
def broker(redis_url):
    """The tests' Redis, with the dispatch tests' queue (which no worker reads) empty before and after."""
    queue_clear(redis_url, DISPATCH_QUEUE)
    yield redis_url
    queue_clear(redis_url, DISPATCH_QUEUE)
