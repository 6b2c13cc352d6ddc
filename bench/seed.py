"""What the benchmarks that run a whole stack share: a fresh database, and a project to run jobs in."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def database_create(url: str) -> None:
    """Drop and create the PostgreSQL database ``url`` names (it must be one only benchmarks use)."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def project_seed(tmp: Path, *, slug: str, rows: int) -> dict[str, Any]:
    """Migrate the settings' database, then add a project, a member with an API token, the tiny
    model as a base model and ``rows`` demo rows as a dataset version, all from local files."""
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from controlplane.accounts.models import Role, TokenScope
    from controlplane.accounts.services import api_token_create, member_add, project_create
    from controlplane.datasets.models import Dataset, DatasetVersion
    from controlplane.site.demo import demo_instruction_rows, demo_jsonl
    from controlplane.training.models import BaseModel
    from workers.tinymodel import build_tiny_model

    project = project_create(slug=slug, name=slug.title())
    user = member_add(project=project, username=slug, role=Role.MEMBER)
    corpus = [f"{r['instruction']} {r['input']} {r['output']}" for r in demo_instruction_rows(256)]
    model_dir = build_tiny_model(tmp / "model", corpus)
    data = tmp / "data.jsonl"
    data.write_bytes(demo_jsonl(rows))
    dataset = Dataset.objects.create(project=project, name="d")
    version = DatasetVersion.objects.create(
        dataset=dataset, version=1, format="instruction", sha256="0" * 64, uri=str(data),
        filename="data.jsonl", row_count=rows, size_bytes=data.stat().st_size, created_by=user,
    )  # fmt: skip
    return {
        "project": project,
        "user": user,
        "token": api_token_create(user=user, name="bench", scopes=list(TokenScope))[1],
        "base": BaseModel.objects.create(project=project, name="tiny", uri=str(model_dir)),
        "version": version,
    }


def page_times(client: Any, url: str, repeats: int) -> tuple[list[float], int, Any]:
    """Ask ``url`` of a Django test ``client`` ``repeats`` times after a warm-up: the seconds each
    took, the SQL queries one answer costs, and the last answer."""
    import time

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(3):
        assert client.get(url).status_code == 200
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        response = client.get(url)
        times.append(time.perf_counter() - begin)
        assert response.status_code == 200, response.content[:300]
    with CaptureQueriesContext(connection) as captured:
        client.get(url)
    return times, len(captured), response
