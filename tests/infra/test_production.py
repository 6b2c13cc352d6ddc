"""Production settings: with the values of infra/production.env, Django's deployment check is clean."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _production_env() -> dict[str, str]:
    values = {}
    for line in (ROOT / "infra" / "production.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    values["SECRET_KEY"] = secrets.token_urlsafe(60)
    values["WORKER_TOKEN"] = secrets.token_urlsafe(32)
    # The check needs no database: a throwaway SQLite file stands in for PostgreSQL.
    values["DATABASE_URL"] = "sqlite:////tmp/tuneyard-deploy-check.sqlite3"
    return {**os.environ, **values}


def _check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )


def test_the_deployment_check_is_clean_with_production_values():
    result = _check(_production_env())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_the_check_fails_without_them():
    # The same check, with HTTPS off: it must speak, or the clean run above proves nothing.
    result = _check(_production_env() | {"HTTPS": "false"})
    assert result.returncode != 0 and "SECURE_SSL_REDIRECT" in result.stdout + result.stderr
