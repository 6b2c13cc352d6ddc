"""The suite and gate pages: what they show, bad form input as a message that changes nothing,
outsiders as 404."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from controlplane.evidence import suites
from controlplane.evidence.models import GatePolicy, Suite, SuiteRun
from tests.conftest import PASSWORD
from tests.controlplane.evidence.test_suites import quiz_task, run_succeed, suite_make, version_make

pytestmark = pytest.mark.django_db


def _web(name: str) -> Client:
    client = Client()
    assert client.login(username=name, password=PASSWORD)
    return client


def test_a_suite_is_written_run_and_shown_from_the_pages(people):
    version = version_make(people["demo"], people["alice"])
    alice = _web("alice")
    tasks = json.dumps([quiz_task(people["demo"], people["alice"])])
    answer = alice.post(
        f"/p/demo/models/{version.name}/suites/new", {"name": "core", "tasks": tasks, "seed": "3"}
    )
    assert answer.status_code == 302
    suite = Suite.objects.get()
    assert (suite.name, suite.seed) == ("core", 3)
    ran = alice.post(f"/p/demo/suites/{suite.pk}/runs", {"model_version": str(version.pk)})
    run = SuiteRun.objects.get()
    assert ran.status_code == 302 and ran["Location"] == f"/p/demo/suite-runs/{run.pk}"
    run_succeed(run, {"quiz": {"mc_acc": 0.5}})
    page = alice.get(f"/p/demo/models/{version.name}/suites").content.decode()
    assert 'id="suite-core"' in page and f'data-run="{run.pk}"' in page
    detail = alice.get(f"/p/demo/suite-runs/{run.pk}").content.decode()
    assert 'data-status="succeeded"' in detail and "0.5000" in detail


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"name": "core", "tasks": "{not json"}, "tasks: not JSON"),
        ({"name": "core", "tasks": "[]"}, "at least 1"),
        ({"name": "core", "tasks": "[]", "seed": "-3"}, "seed"),
        ({"name": "BAD", "tasks": "[]"}, "suite name"),
    ],
)
def test_a_bad_suite_form_is_a_message_and_writes_nothing(people, form, message):
    version = version_make(people["demo"], people["alice"])
    page = _web("alice").post(f"/p/demo/models/{version.name}/suites/new", form, follow=True)
    assert page.status_code == 200 and message in page.content.decode()
    assert not Suite.objects.exists()


def test_a_gate_is_saved_from_the_page_by_an_approver_only(people):
    version = version_make(people["demo"], people["alice"])
    suite_make(people, version)
    rules = json.dumps(
        [
            {
                "kind": "absolute",
                "suite": "core",
                "task": "quiz-0",
                "metric": "mc_acc",
                "op": ">=",
                "value": 0.5,
            }
        ]
    )
    refused = _web("alice").post(f"/p/demo/models/{version.name}/gates/production", {"rules": rules})
    assert refused.status_code == 403
    moon = _web("carol").post(f"/p/demo/models/{version.name}/gates/moon", {"rules": "[]"}, follow=True)
    assert "Unknown target" in moon.content.decode()
    saved = _web("carol").post(f"/p/demo/models/{version.name}/gates/production", {"rules": rules})
    assert saved.status_code == 302 and saved["Location"].endswith("/suites#gate-production")
    assert GatePolicy.objects.get().rules[0]["value"] == 0.5


def test_charlie_gets_404_on_every_suite_page_of_demo(people):
    version = version_make(people["demo"], people["alice"])
    suite = suite_make(people, version)
    run = SuiteRun.objects.create(suite=suite, model_version=version, created_by=people["alice"])
    charlie = _web("charlie")
    answers = [
        charlie.get(f"/p/demo/models/{version.name}/suites"),
        charlie.post(f"/p/demo/models/{version.name}/suites/new", {"name": "x", "tasks": "[]"}),
        charlie.post(f"/p/demo/suites/{suite.pk}/versions", {"tasks": "[]"}),
        charlie.post(f"/p/demo/suites/{suite.pk}/runs", {"model_version": str(version.pk)}),
        charlie.get(f"/p/demo/suite-runs/{run.pk}"),
        charlie.get(f"/p/demo/suite-runs/{run.pk}/tasks/quiz-0/predictions"),
        charlie.post(f"/p/demo/models/{version.name}/gates/production", {"rules": "[]"}),
        # Demo's objects under charlie's own project are not found either.
        charlie.get(f"/p/other/suite-runs/{run.pk}"),
    ]
    assert [a.status_code for a in answers] == [404] * len(answers)
    assert Suite.objects.count() == 1 and SuiteRun.objects.count() == 1 and not GatePolicy.objects.exists()


def test_predictions_not_there_yet_are_a_message_on_the_page(people):
    version = version_make(people["demo"], people["alice"])
    suite = suite_make(people, version)
    run, _ = suites.suite_run_request(suite=suite, model_version=version, user=people["alice"])
    page = _web("alice").get(f"/p/demo/suite-runs/{run.pk}/tasks/quiz-0/predictions")
    assert (
        page.status_code == 200
        and "is queued: its predictions are kept once its job succeeds" in page.content.decode()
    )
    assert _web("alice").get(f"/p/demo/suite-runs/{run.pk}/tasks/nope/predictions").status_code == 404
