"""The web process keeps its database connections between requests (``DATABASE_CONN_MAX_AGE``)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db import connection

from controlplane.accounts.models import TokenScope
from controlplane.accounts.services import api_token_create
from infra import processes
from tests.conftest import _start, _stop


def _web_backends(application: str) -> set[int]:
    """The PostgreSQL backends the web process holds open (named by its application_name)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", [application])
        return {pid for (pid,) in cursor.fetchall()}


@pytest.mark.django_db(transaction=True)
def test_the_web_process_answers_requests_on_connections_it_keeps(people, tmp_path: Path) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("reads PostgreSQL's pg_stat_activity")
    token = api_token_create(user=people["alice"], name="test", scopes=[TokenScope.READ])[1]
    application = f"tuneyard-web-{uuid.uuid4().hex[:8]}"
    port = processes.free_port()
    database = settings.DATABASES["default"]
    env = {
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "PGAPPNAME": application,  # libpq names the web process's connections
        "DEBUG": "true",
        "TUNEYARD_VAR_DIR": str(tmp_path),
    }
    web = _start(processes.web_command(port=port), tmp_path / "web.log", env)
    try:
        processes.wait_for_http(f"http://127.0.0.1:{port}/login/", process=web)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1/") as api:
            for _ in range(20):
                response = api.get("projects", headers={"Authorization": f"Token {token}"})
                assert response.status_code == 200 and response.json()["results"][0]["slug"] == "demo"
            kept = _web_backends(application)
    finally:
        _stop(web)
    # Answered and idle, the web process still held its connections (one per thread that
    # served, at most its 2 workers x 4 threads), where with one per request it would hold none.
    assert 1 <= len(kept) <= 8
    deadline = time.monotonic() + 10
    while _web_backends(application) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _web_backends(application)  # gone with the process
