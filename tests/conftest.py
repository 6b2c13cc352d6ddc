"""Shared fixtures.

The real services are started once per test session and only when a test asks
for them: an MLflow tracking server, a Redis database (REDIS_URL's, or a
redis-server of our own) and a Celery worker process that calls the live
control plane over HTTP. The database is whatever DATABASE_URL names
(PostgreSQL in CI), else SQLite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import processes

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "pw-for-tests-only"


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def _start(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def mlflow_server(services_dir: Path) -> Iterator[str]:
    """A real MLflow tracking server (SQLite backend, artifacts served over HTTP)."""
    from django.conf import settings

    port = processes.free_port()
    (services_dir / "mlartifacts").mkdir()
    process = _start(
        processes.mlflow_command(
            port=port,
            backend_store_uri=f"sqlite:///{services_dir / 'mlflow.db'}",
            artifacts_destination=str(services_dir / "mlartifacts"),
        ),
        services_dir / "mlflow.log",
        processes.MLFLOW_ENV,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        processes.wait_for_http(f"{url}/health", timeout=120, process=process)
    except Exception:
        _stop(process)
        print((services_dir / "mlflow.log").read_text()[-3000:])
        raise
    previous = settings.MLFLOW_TRACKING_URI
    settings.MLFLOW_TRACKING_URI = url
    yield url
    settings.MLFLOW_TRACKING_URI = previous
    _stop(process)


@pytest.fixture(scope="session", autouse=True)
def redis_url(services_dir: Path) -> Iterator[str]:
    """The broker: TEST_REDIS_URL's database (flushed first), else a redis-server of our own.

    Used by every test, so that no job created anywhere in the suite is ever sent
    to the broker the settings name by default.
    """
    import redis
    from django.conf import settings

    from controlplane.celery import app

    url = os.environ.get("TEST_REDIS_URL")
    process = None
    if url is None:
        port = processes.free_port()
        (services_dir / "redis").mkdir()
        process = _start(
            processes.redis_command(port=port, workdir=services_dir / "redis"),
            services_dir / "redis.log",
        )
        processes.wait_for_port(port, process=process)
        url = f"redis://127.0.0.1:{port}/0"
    redis.Redis.from_url(url).flushdb()
    settings.CELERY_BROKER_URL = url
    app.conf.broker_url = url
    yield url
    if process is not None:
        _stop(process)


@pytest.fixture(scope="session", autouse=True)
def model_uri_roots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """pytest's base temp dir: the one root the suite's base models may be loaded from by path.

    Set for the control plane (its settings) and for every process the suite
    starts (the environment: the worker, the engine's runs), as an admin would.
    """
    from django.conf import settings

    root = str(tmp_path_factory.getbasetemp())
    previous = settings.MODEL_URI_ROOTS, os.environ.get("MODEL_URI_ROOTS")
    settings.MODEL_URI_ROOTS = [root]
    os.environ["MODEL_URI_ROOTS"] = root
    yield root
    settings.MODEL_URI_ROOTS = previous[0]
    if previous[1] is None:
        os.environ.pop("MODEL_URI_ROOTS", None)
    else:
        os.environ["MODEL_URI_ROOTS"] = previous[1]


# The session's two tiny models, built here and nowhere else in the suite: one
# with the tokenizer of workers.tinymodel's own corpus (the engine's tests train
# on rows like it), one with the demo's, as `make up` seeds it (the end-to-end
# tests train on the demo's arithmetic rows).


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.tinymodel import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from controlplane.site.demo import demo_instruction_rows
    from workers.tinymodel import build_tiny_model

    corpus = [f"{r['instruction']} {r['input']} {r['output']}" for r in demo_instruction_rows(256)]
    return build_tiny_model(tmp_path_factory.mktemp("demo-tiny") / "model", corpus)


@pytest.fixture(scope="session")
def tiny_model_uri(mlflow_server: str, demo_model_dir: Path) -> str:
    """The demo's tiny model stored once per session in MLflow's artifact store."""
    from controlplane import tracking

    return tracking.artifact_upload(
        demo_model_dir,
        experiment="tuneyard/demo/base-models",  # a base model of project "demo", by the URI rule
        run_name="tiny",
        artifact_path="model",
        tags={},
    )


@pytest.fixture(scope="session")
def worker(
    live_server, redis_url: str, mlflow_server: str, services_dir: Path, model_uri_roots: str
) -> Iterator[subprocess.Popen]:
    """A real Celery worker process on the cpu queue, reporting to the live control plane."""
    from django.conf import settings

    env = {
        "MODEL_URI_ROOTS": model_uri_roots,
        "CONTROLPLANE_URL": live_server.url,
        "WORKER_TOKEN": settings.WORKER_TOKEN,
        # As a worker does: through the gate, with the token each claim gives it.
        "MLFLOW_TRACKING_URI": f"{live_server.url}/mlflow",
        "CELERY_BROKER_URL": redis_url,
        "TUNEYARD_WORKER_NAME": "test-worker",
        # Two jobs at once, as a two-GPU host runs them (sweeps run trials in parallel).
        "TUNEYARD_WORKER_CONCURRENCY": "2",
        "TUNEYARD_PRESENCE_SECONDS": "1",
    }
    # Messages sent by earlier tests name jobs that no longer exist; start clean.
    from tests.broker import queue_clear

    queue_clear(redis_url, "cpu")
    log = services_dir / "worker.log"
    process = _start(processes.worker_command(queues=["cpu"], name="test-worker@%h"), log, env)
    # Celery prints "ready" once it consumes; wait for it so the first job is not raced.
    import time

    deadline = time.monotonic() + 60
    while "ready." not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            raise RuntimeError(f"the worker did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    yield process
    _stop(process)


# --- people and projects -----------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Debian's Chromium under Playwright, one per test session (tests/browsing.py)."""
    from tests.browsing import chromium

    yield from chromium()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """pytest-django's test database, with the sweeps' Optuna connections closed before it is dropped."""
    yield
    from controlplane.sweeps.studies import storages_close

    storages_close()


@pytest.fixture
def people(db):
    """alice and bob (members), carol (approver) in project "demo"; charlie only in "other"."""
    from controlplane.accounts.models import Role
    from controlplane.accounts.services import member_add, project_create

    demo = project_create(slug="demo", name="Demo")
    other = project_create(slug="other", name="Other")
    users = {
        "alice": member_add(project=demo, username="alice", role=Role.MEMBER, password=PASSWORD),
        "bob": member_add(project=demo, username="bob", role=Role.MEMBER, password=PASSWORD),
        "carol": member_add(project=demo, username="carol", role=Role.APPROVER, password=PASSWORD),
        "viv": member_add(project=demo, username="viv", role=Role.VIEWER, password=PASSWORD),
        "charlie": member_add(project=other, username="charlie", role=Role.ADMIN, password=PASSWORD),
    }
    return {"demo": demo, "other": other, **users}


@pytest.fixture
def api_for(people):
    """An authenticated REST client for one of the people, by name."""
    from rest_framework.test import APIClient

    def make(name: str) -> APIClient:
        client = APIClient()
        client.force_authenticate(user=people[name])
        return client

    return make


def pytest_configure(config: pytest.Config) -> None:
    import secrets

    from django.conf import settings

    # The development worker token works only on a laptop, from loopback: the suite's workers (in
    # this process and the ones it starts, which read the environment) use a token of their own.
    settings.WORKER_TOKEN = os.environ["WORKER_TOKEN"] = secrets.token_urlsafe(24)
    # The live server in this process serves each HTTP connection in a thread of its own, which
    # would keep its database connection while its client keeps the socket open, and the test
    # database could not be dropped. As Django advises for its development server, such threads
    # close theirs after each request. The web processes the suite starts keep the default.
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    # Static files from the finders, by their plain names, whatever an earlier `make up` left in
    # STATIC_ROOT (its manifest would make the pages ask for hashed names no test server has).
    os.environ["STATIC_MANIFEST"] = "false"
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The slow end-to-end and browser tests run last, after the fast ones have spoken.
    items.sort(key=lambda item: ("browser" in item.keywords, "e2e" in item.keywords))


def pytest_report_header(config: pytest.Config) -> str:
    from django.conf import settings

    return f"tuneyard: database {settings.DATABASES['default']['ENGINE']}, python {sys.version.split()[0]}"
