"""Promotion on evidence through the client and the command line, against the live server: a
request withdrawn, a comment, an approval whose card is read back as JSON and Markdown, a governed
rollback, the deployment history, and an admin's emergency rollback."""

from __future__ import annotations

import json
import uuid

import pytest

from controlplane.accounts.models import Role
from controlplane.accounts.services import member_add
from tests.cli.test_cli import tuneyard
from tests.conftest import PASSWORD
from tests.controlplane.registry.trained import trained_job_make
from tuneyard import Client, Conflict, Forbidden, NotFound

pytestmark = pytest.mark.django_db(transaction=True)


def _model() -> str:
    """A name of its own: MLflow's registry (and its version numbers) outlives each test's database."""
    return f"chat-{uuid.uuid4().hex[:8]}"


def _client(url: str, name: str) -> Client:
    return Client(url, Client(url).token_obtain(name, PASSWORD))


def test_a_pipeline_governs_a_model_from_request_to_rollback(people, live_server, mlflow_server, tmp_path):
    member_add(project=people["demo"], username="ada", role=Role.ADMIN, password=PASSWORD)
    alice, carol, ada = (_client(live_server.url, name) for name in ("alice", "carol", "ada"))
    model = _model()
    first, second = (
        alice.model_versions.register(
            job=trained_job_make(people["demo"], people["alice"], tmp_path).pk, name=model
        )
        for _ in range(2)
    )

    withdrawn = alice.promotions.request(model_version=first.id, comment="too early")
    assert alice.promotions.withdraw(withdrawn.id).status == "withdrawn"
    with pytest.raises(Conflict):
        carol.promotions.approve(withdrawn.id)

    for version in (first, second):
        promotion = alice.promotions.request(model_version=version.id)
        alice.promotions.comment(promotion.id, f"v{version.mlflow_version} looks right")
        assert carol.promotions.approve(promotion.id)["status"] == "approved"
    assert [c["body"] for c in alice.promotions.comments(promotion.id)] == ["v2 looks right"]

    card = alice.deployments.card(project="demo", model=model)
    assert (card["model_name"], card["mlflow_version"], card["promotion"]) == (model, 2, promotion.id)
    markdown = alice.promotions.card(promotion.id, markdown=True)
    assert markdown.startswith(f"# Model card: {model} v2")
    with pytest.raises(NotFound, match="No gate policy"):
        alice.promotions.gates(promotion.id)

    back = alice.promotions.rollback(model_version=first.id, comment="v2 regressed")
    assert (back.kind, back.status) == ("rollback", "requested")
    with pytest.raises(Forbidden):
        alice.promotions.approve(back.id)  # a member decides nothing
    carol.promotions.approve(back.id)
    history = alice.deployments.history(project="demo", model=model)
    assert [(h["mlflow_version"], h["kind"]) for h in history] == [
        (1, "promote"),
        (2, "promote"),
        (1, "rollback"),
    ]

    with pytest.raises(Forbidden):
        carol.promotions.rollback(model_version=second.id, emergency=True, reason="outage")
    emergency = ada.promotions.rollback(model_version=second.id, emergency=True, reason="v1 is down")
    assert (emergency.status, emergency.override_reason) == ("approved", "v1 is down")
    [production] = alice.deployments.list(project="demo", model=model)
    assert production.mlflow_version == 2


def test_the_command_line_reads_the_card_history_and_votes(people, live_server, mlflow_server, tmp_path):
    alice, carol = (_client(live_server.url, name) for name in ("alice", "carol"))

    def cli(*args: str):
        return tuneyard(*args, url=live_server.url, token=alice.http.headers["Authorization"].split()[-1])

    model = _model()
    version = alice.model_versions.register(
        job=trained_job_make(people["demo"], people["alice"], tmp_path).pk, name=model
    )
    promotion = alice.promotions.request(model_version=version.id)
    assert carol.promotions.approve(promotion.id)["status"] == "approved"

    done = cli("card", "--project", "demo", "--model", model, "--markdown")
    assert done.returncode == 0 and done.stdout.startswith(f"# Model card: {model} v1")
    done = cli("history", "--project", "demo", "--model", model)
    assert [h["mlflow_version"] for h in json.loads(done.stdout)["results"]] == [1]
    done = cli("gates", str(promotion.id))
    assert done.returncode == 2 and "No gate policy" in done.stderr
    done = cli("votes", str(promotion.id))
    assert done.returncode == 0 and done.stdout.splitlines()[0].startswith(("promotion", "task"))
    done = cli("withdraw", str(promotion.id))
    assert done.returncode == 2 and "refused" in done.stderr
