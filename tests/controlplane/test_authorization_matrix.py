"""The authorization matrix, generated from the URL configuration: every API and internal
endpoint × every method its view answers × alice, bob, a viewer, an outsider, someone in
no project and a worker token.

Every path parameter is filled with an object of project "demo" (or, the other way round,
of project "other"), and every body and query names that project. Across projects the
answer is never a 2xx, and nothing answers 5xx. A new endpoint whose parameters the
matrix cannot fill fails here until it is added: the matrix cannot fall behind the URLs.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from controlplane.accounts.models import TokenScope
from controlplane.accounts.services import api_token_create
from controlplane.datasets.models import ChunkedUpload, DatasetOperation
from controlplane.evidence.models import Suite, SuiteRun
from controlplane.sweeps.models import Sweep
from controlplane.webhooks.models import Delivery, Endpoint, Event
from controlplane.webhooks.services import secret_new
from tests.factories import job_make, model_version_make, promotion_make

pytestmark = pytest.mark.django_db

# Endpoints about the caller, not a project: they answer anyone signed in, with only
# what is theirs (checked below: nothing of the other project shows).
CALLER_SCOPED = {
    "api-token",
    "api-projects",
    "api-workers",
    "api-schema",
    "api-docs",
    "api-tokens",
    "api-deployments",
}
METHODS = ("get", "post", "put", "patch", "delete")


def _endpoints() -> Iterator[tuple[str, str, list[str]]]:
    """(url name, route with <params>, methods its view answers) of /api/v1/ and /internal/v1/."""

    def walk(patterns, prefix: str) -> Iterator[tuple[str, URLPattern]]:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                yield prefix + str(pattern.pattern), pattern

    for route, pattern in walk(get_resolver().url_patterns, "/"):
        if not route.startswith(("/api/v1/", "/internal/v1/")):
            continue
        view = pattern.callback
        view_class = getattr(view, "view_class", None) or getattr(view, "cls", None)
        if view_class is not None:
            methods = [m for m in METHODS if hasattr(view_class, m)]
        else:  # a function view: what its decorator allows
            methods = [
                m.lower() for m in getattr(view, "http_method_names", ["get", "post"]) if m.lower() in METHODS
            ]
        yield pattern.name or route, route, methods


def _project_objects(people, slug: str, owner: str) -> dict[str, object]:
    project, user = people[slug], people[owner]
    job = job_make(project, user)
    version = model_version_make(job, user)
    promotion = promotion_make(version, user)
    operation = DatasetOperation.objects.create(
        project=project, name="x", filename="d.jsonl", size_bytes=1, created_by=user
    )
    upload = ChunkedUpload.objects.create(
        project=project, created_by=user, filename="d.jsonl", size_bytes=10, staged_path="/nonexistent"
    )
    sweep = Sweep.objects.create(
        project=project,
        name="s",
        study_name=f"matrix-{slug}",
        created_by=user,
        base_model=job.base_model,
        dataset_version=job.dataset_version,
        base_config={},
        search_space={},
        n_trials=1,
    )
    values: dict[str, object] = {
        "slug": slug,
        "job_id": job.pk,
        "version_id": job.dataset_version.pk,
        "operation_id": operation.pk,
        "upload_id": upload.pk,
        "promotion_id": promotion.pk,
        "model_version_id": version.pk,
        "sweep_id": sweep.pk,
        "target": "production",
    }
    token, _ = api_token_create(user=user, name="matrix", scopes=list(TokenScope))
    values["token_id"] = token.pk
    endpoint = Endpoint.objects.create(
        project=project, url="https://hooks.example.com/x", secret=secret_new(), created_by=user
    )
    event = Event.objects.create(project=project, key=f"matrix:{slug}", type="job.succeeded", data={})
    delivery = Delivery.objects.create(
        endpoint=endpoint, event=event, message_id=f"msg_matrix_{slug}", next_attempt_at=timezone.now()
    )
    values["webhook_id"], values["delivery_id"] = endpoint.pk, delivery.pk
    # evaluation suites: a suite version, a run of it, one of its tasks
    suite = Suite.objects.create(
        project=project,
        model_name=version.name,
        name="s",
        version=1,
        tasks=[],
        digest="0" * 64,
        created_by=user,
    )
    run = SuiteRun.objects.create(suite=suite, model_version=version, created_by=user)
    values |= {"suite_id": suite.pk, "suite_run_id": run.pk, "task": "t"}
    return values


def _url(route: str, values: dict[str, object]) -> str:
    url = route
    while "<" in url:
        start = url.index("<")
        end = url.index(">", start)
        name = url[start + 1 : end].split(":")[-1]
        if name not in values:
            pytest.fail(
                f"the authorization matrix cannot fill <{name}> of {route}: add it to _project_objects"
            )
        url = url[:start] + str(values[name]) + url[end + 1 :]
    return url


def _body(values: dict[str, object]) -> dict[str, object]:
    """A body that names the project and its objects the way the API's bodies do."""
    return {
        "project": values["slug"],
        "job": values["job_id"],
        "source_job": values["job_id"],
        "model_version": values["promotion_id"],
        "dataset_version": values["version_id"],
        "name": "x",
        "target": "staging",
    }


def _call(client: Client, method: str, url: str, values: dict[str, object], **headers):
    query = {"project": values["slug"]}
    if method == "get":
        return client.get(url, query, **headers)
    return getattr(client, method)(
        f"{url}?project={values['slug']}",
        json.dumps(_body(values)),
        content_type="application/json",
        **headers,
    )


def _signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def matrix(people, django_user_model):
    nobody = django_user_model.objects.create_user("nobody", password="x" * 12)
    return {
        "demo": _project_objects(people, "demo", "alice"),
        "other": _project_objects(people, "other", "charlie"),
        "callers": {
            "alice": _signed_in(people["alice"]),
            "bob": _signed_in(people["bob"]),
            "viv": _signed_in(people["viv"]),
            "charlie": _signed_in(people["charlie"]),
            "nobody": _signed_in(nobody),
            "worker": Client(HTTP_AUTHORIZATION=f"Bearer {settings.WORKER_TOKEN}"),
        },
    }


def test_the_matrix_covers_every_endpoint():
    endpoints = list(_endpoints())
    assert len(endpoints) >= 40, [name for name, _, _ in endpoints]
    assert all(methods for _, _, methods in endpoints), endpoints


def test_no_caller_gets_a_2xx_on_another_projects_objects_and_nothing_answers_5xx(matrix):
    crossings = [
        # (caller, the project whose objects it names): none of these may succeed.
        ("charlie", "demo"),
        ("nobody", "demo"),
        ("worker", "demo"),
        ("alice", "other"),
        ("bob", "other"),
        ("viv", "other"),
    ]
    failures = []
    calls = 0
    for name, route, methods in _endpoints():
        for method in methods:
            for caller, owner in crossings:
                values = matrix[owner]
                response = _call(matrix["callers"][caller], method, _url(route, values), values)
                calls += 1
                status = response.status_code
                text = response.content.decode(errors="replace") if not response.streaming else ""
                if status >= 500:
                    failures.append((caller, method, route, status, text[:200]))
                elif name in CALLER_SCOPED:
                    # Theirs only: the other project's slug never shows.
                    if 200 <= status < 300 and f'"{owner}"' in text and caller != "worker":
                        failures.append((caller, method, route, status, "shows the other project"))
                elif 200 <= status < 300:
                    failures.append((caller, method, route, status, text[:200]))
    assert calls >= 6 * 40
    assert failures == [], failures


def test_not_yours_reads_exactly_as_not_there(matrix):
    """For every GET of one object: another project's object and a missing id get the same 404 body."""
    charlie = matrix["callers"]["charlie"]
    missing = {
        key: (uuid.uuid4() if key == "upload_id" else 2**40) for key in matrix["demo"] if key.endswith("_id")
    }
    missing |= {"slug": "no-such-project", "target": "production", "task": "t"}
    compared = 0
    for name, route, methods in _endpoints():
        if (
            "get" not in methods
            or "<" not in route
            or name in CALLER_SCOPED
            or route.startswith("/internal/")
        ):
            continue
        # The project named in the query too, as the endpoints that take ?project= need it.
        theirs = charlie.get(_url(route, matrix["demo"]), {"project": "demo"})
        absent = charlie.get(_url(route, missing), {"project": missing["slug"]})
        assert theirs.status_code == absent.status_code == 404, (
            route,
            theirs.status_code,
            absent.status_code,
        )
        assert theirs.json() == absent.json(), (route, theirs.json(), absent.json())
        compared += 1
    assert compared >= 8
