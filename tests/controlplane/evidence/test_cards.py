"""The model card: written at approval from committed rows, cited by digest, immutable, in MLflow."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from django.utils import timezone
from mlflow import MlflowClient

from controlplane import tracking
from controlplane.datasets.models import DatasetOperation, OperationKind, OperationStatus
from controlplane.errors import ServiceUnavailable
from controlplane.evidence import card_markdown, cards, digests
from controlplane.evidence.models import GateCheck, ModelCard, ReviewVote, Suite, SuiteRun, SuiteRunStatus
from controlplane.registry import services
from controlplane.registry.models import Promotion, PromotionStatus
from controlplane.registry.services import model_version_create, promotion_request
from tests.controlplane.registry.trained import trained_job_make

pytestmark = pytest.mark.django_db


def _checks_run(job, user) -> list[DatasetOperation]:
    """A PII scan, a contamination check against the training data and a dedup, all finished."""
    train = job.dataset_version
    done = {"status": OperationStatus.SUCCEEDED, "finished_at": timezone.now(), "created_by": user}
    return [
        DatasetOperation.objects.create(
            project=job.project,
            kind=OperationKind.PII_SCAN,
            name=train.dataset.name,
            source_version=train,
            result={
                "kind": "pii_scan",
                "rows": 3,
                "kinds": {"email": {"rows": 1, "matches": 1, "examples": []}},
            },
            **done,
        ),
        DatasetOperation.objects.create(
            project=job.project,
            kind=OperationKind.CONTAMINATION,
            name="eval",
            source_version=train,  # any eval version; what matters is the training version it names
            options={"train_version": train.pk, "n": 8},
            result={
                "kind": "contamination",
                "train_version": train.pk,
                "contaminated_rows": 0,
                "eval_rows": 40,
            },
            **done,
        ),
        DatasetOperation.objects.create(
            project=job.project,
            kind=OperationKind.DEDUP,
            name=train.dataset.name,
            source_version=train,
            result={"kind": "dedup", "removed": 2},
            **done,
        ),
    ]


def _suite_runs(project, user, challenger, champion) -> tuple[Suite, SuiteRun, SuiteRun]:
    suite = Suite.objects.create(
        project=project,
        model_name=challenger.name,
        name="core",
        version=1,
        tasks=[],
        digest="d" * 64,
        created_by=user,
    )

    def run(version, results):
        return SuiteRun.objects.create(
            suite=suite,
            model_version=version,
            status=SuiteRunStatus.SUCCEEDED,
            results=results,
            digest=digests.digest_of({"suite": suite.digest, "results": results}),
            created_by=user,
            finished_at=timezone.now(),
        )

    ours = run(challenger, {"qa": {"exact_match": 0.61, "rougeL": 0.5}, "arith": {"answer_accuracy": 0.4}})
    theirs = run(champion, {"qa": {"exact_match": 0.55, "rougeL": 0.52}, "arith": {"answer_accuracy": 0.4}})
    return suite, ours, theirs


@pytest.fixture
def champion(people, mlflow_server, tmp_path):
    """Version 1 of "tiny", approved to production: the champion the next version is compared with."""
    job = trained_job_make(people["demo"], people["alice"], tmp_path)
    version = model_version_create(job=job, user=people["alice"], name="tiny")
    promotion = promotion_request(model_version=version, user=people["alice"], target="production")
    services.promotion_approve(promotion=promotion, user=people["carol"])
    return version


@pytest.fixture
def challenger(people, mlflow_server, tmp_path, champion):
    """Version 2 of "tiny", asked for production, with its evidence: checks, suite runs, votes."""
    job = trained_job_make(people["demo"], people["alice"], tmp_path)
    version = model_version_create(job=job, user=people["alice"], name="tiny")
    promotion = promotion_request(
        model_version=version, user=people["alice"], target="production", comment="better at QA"
    )
    _checks_run(job, people["alice"])
    _suite_runs(people["demo"], people["alice"], version, champion)
    for row, vote in ((0, "a"), (1, "b"), (2, "tie")):
        ReviewVote.objects.create(
            promotion=promotion, task="qa", row=row, voter=people["carol"], challenger_side="a", vote=vote
        )
    return promotion


def _approved_card(promotion, user) -> ModelCard:
    services.promotion_approve(promotion=promotion, user=user, comment="ship it")
    return ModelCard.objects.get(promotion=promotion)


def test_approval_writes_a_card_with_every_part_from_the_committed_rows(people, challenger, champion):
    card = _approved_card(challenger, people["carol"])
    data = card.data
    version = challenger.model_version
    job = version.job

    assert data["model"] | {} == {
        "id": version.pk,
        "name": "tiny",
        "mlflow_name": "demo.tiny",
        "mlflow_version": version.version,
        "mlflow_uri": f"models:/demo.tiny/{version.version}",
        "source_uri": version.source_uri,
        "registered_at": version.created_at.isoformat(),
    }
    assert data["champion"]["id"] == champion.pk
    assert data["base_model"] == {"name": job.base_model.name, "uri": job.base_model.uri}
    assert data["training"]["method"] == "lora" and data["training"]["config"] == job.config
    assert data["training"]["hyperparameters"] == job.config["hyperparameters"]
    assert data["training"]["mlflow_run_id"] == job.mlflow_run_id

    [dataset] = data["datasets"]
    assert dataset["sha256"] == job.dataset_version.sha256
    assert [c["kind"] for c in dataset["checks"]] == ["contamination", "pii_scan", "dedup"]
    assert dataset["checks"][1]["result"]["kinds"]["email"]["rows"] == 1

    [suite] = data["suites"]
    assert (suite["suite"], suite["version"]) == ("core", 1)
    qa = {row["metric"]: row for row in suite["comparison"] if row["task"] == "qa"}
    assert qa["exact_match"]["delta"] == pytest.approx(0.06)
    assert qa["rougeL"]["delta"] == pytest.approx(-0.02)

    assert data["review"] | {"digest": None} == {
        "votes": 3,
        "challenger_wins": 1,
        "champion_wins": 1,
        "ties": 1,
        "challenger_win_rate": 0.5,
        "voters": ["carol"],
        "digest": None,
    }
    promotion = data["promotion"]
    assert (promotion["requested_by"], promotion["approved_by"]) == ("alice", "carol")
    assert promotion["comment"] == "better at QA" and promotion["decision_comment"] == "ship it"
    decided_at = Promotion.objects.get(pk=challenger.pk).decided_at
    assert decided_at is not None and promotion["approved_at"] == decided_at.isoformat()
    # The training run was made by a test, not a worker: nothing says which libraries it used.
    assert data["libraries"] == cards.NOT_RECORDED

    markdown = card.markdown
    assert markdown.startswith("# Model card: tiny v2\n")
    assert f"sha256 `{job.dataset_version.sha256}`" in markdown
    assert "| qa | exact_match | 0.61 | 0.55 | 0.06 |" in markdown
    assert "Library versions: not recorded." in markdown


def test_the_card_cites_each_row_by_its_digest_and_recomputes_to_its_own(people, challenger):
    card = _approved_card(challenger, people["carol"])
    card.refresh_from_db()  # as PostgreSQL's jsonb gives it back
    data = card.data

    assert card.digest == digests.digest_of(data) == digests.digest_of(card.data)
    runs = {run.model_version_id: run for run in SuiteRun.objects.all()}
    [suite] = data["suites"]
    assert suite["challenger"]["digest"] == runs[challenger.model_version_id].digest
    assert suite["champion"]["digest"] == runs[data["champion"]["id"]].digest
    promotion = Promotion.objects.get(pk=challenger.pk)
    assert data["review"]["digest"] == digests.digest_of(cards.review_votes_cited(promotion))
    for check in data["datasets"][0]["checks"]:
        cited = {key: value for key, value in check.items() if key != "digest"}
        assert check["digest"] == digests.digest_of(cited)
        assert cited["result"] == DatasetOperation.objects.get(pk=check["id"]).result
    gate = GateCheck.objects.filter(promotion=promotion).first()
    assert (data["gate"] or {}).get("digest") == (gate.digest if gate else None)

    # Built again from the same rows, the card is the same to the byte.
    again = digests.json_safe(cards.model_card_data(promotion=promotion, libraries=None))
    assert digests.digest_of(again) == card.digest
    assert card_markdown.model_card_markdown(again) == card.markdown


def test_a_card_is_written_once_and_later_rows_never_change_it(people, challenger):
    card = _approved_card(challenger, people["carol"])
    # Evidence arriving after the decision (a late vote) is not what the approver saw.
    ReviewVote.objects.create(
        promotion=challenger, task="qa", row=9, voter=people["bob"], challenger_side="b", vote="b"
    )
    cards.promotion_changed(challenger.pk, PromotionStatus.APPROVED)
    again = cards.model_card_write(promotion_id=challenger.pk, libraries={"torch": "9"})

    assert again.pk == card.pk
    assert ModelCard.objects.count() == 2  # the champion's and this one
    stored = ModelCard.objects.get(pk=card.pk)
    assert (stored.digest, stored.markdown, stored.data) == (card.digest, card.markdown, card.data)
    assert stored.data["review"]["votes"] == 3
    # Recomputed now, the rows say something else: the card does not follow them.
    assert digests.digest_of(cards.model_card_data(promotion=challenger, libraries=None)) != card.digest


def test_no_card_before_approval_nor_for_a_rejected_request(people, challenger):
    assert not ModelCard.objects.filter(promotion=challenger).exists()
    services.promotion_reject(promotion=challenger, user=people["carol"], comment="not yet")
    assert not ModelCard.objects.filter(promotion=challenger).exists()


def test_an_approval_whose_database_step_fails_leaves_no_card(people, challenger, monkeypatch):
    from django.db import DatabaseError

    from controlplane.registry.models import Deployment

    def broken(**kwargs):
        raise DatabaseError("the database went away")

    # After the card is written, in the same transaction: both roll back.
    monkeypatch.setattr(Deployment.objects, "update_or_create", broken)
    with pytest.raises(DatabaseError):
        services.promotion_approve(promotion=challenger, user=people["carol"])
    monkeypatch.undo()
    assert Promotion.objects.get(pk=challenger.pk).status == PromotionStatus.REQUESTED
    assert not ModelCard.objects.filter(promotion=challenger).exists()
    # Approved once the database is back, it gets its card.
    assert (
        _approved_card(Promotion.objects.get(pk=challenger.pk), people["carol"]).data["review"]["votes"] == 3
    )


def test_the_gate_verdict_and_an_override_are_on_the_card(people, challenger):
    """As the gate's listener leaves it: its check kept before the card is written."""
    Promotion.objects.filter(pk=challenger.pk).update(
        status=PromotionStatus.APPROVED,
        decided_by=people["carol"],
        decided_at=timezone.now(),
        override_reason="the QA gain outweighs\na 2-point drop | on rougeL",
    )
    results = {"rules": [{"label": "rougeL ≥ champion − 1", "status": "fail", "figures": "0.50 vs 0.52"}]}
    check = GateCheck.objects.create(
        promotion=challenger, passed=False, results=results, digest=digests.digest_of(results)
    )
    card = cards.model_card_write(
        promotion_id=challenger.pk, libraries={"torch": "2.13.0", "python": "3.12.3"}
    )

    assert card.data["gate"] == {
        "passed": False,
        "results": results,
        "digest": check.digest,
        "checked_at": check.checked_at.isoformat(),
        "override_reason": "the QA gain outweighs\na 2-point drop | on rougeL",
    }
    assert card.data["libraries"] == {"python": "3.12.3", "torch": "2.13.0"}
    assert "| rougeL ≥ champion − 1 | fail | 0.50 vs 0.52 |" in card.markdown
    # A reason on several lines, with a pipe, stays a quotation and breaks no table.
    assert "> the QA gain outweighs\n> a 2-point drop | on rougeL" in card.markdown
    assert "| python | 3.12.3 |" in card.markdown


@pytest.mark.django_db(transaction=True)
def test_mlflow_gets_the_card_beside_the_model_with_the_runs_library_versions(
    people, mlflow_server, tmp_path, monkeypatch, caplog
):
    job = trained_job_make(people["demo"], people["alice"], tmp_path)
    client = MlflowClient(mlflow_server)
    for key, value in {"torch": "2.13.0", "transformers": "5.24.0", "python": "3.12.3"}.items():
        client.set_tag(job.mlflow_run_id, f"tuneyard.library.{key}", value)
    version = model_version_create(job=job, user=people["alice"], name="carded")
    promotion = promotion_request(model_version=version, user=people["alice"], target="staging")

    # MLflow fails to take the card: the approval stands, and the failure is said loudly.
    def card_refused(**kwargs):
        raise ServiceUnavailable("MLflow could not store the model card: gone")

    with monkeypatch.context() as patch:
        patch.setattr(tracking, "model_card_log", card_refused)
        with caplog.at_level(logging.ERROR, logger="controlplane.evidence.cards"):
            services.promotion_approve(promotion=promotion, user=people["carol"])
    assert "did not reach MLflow" in caplog.text
    card = ModelCard.objects.get(promotion=promotion)
    assert card.data["libraries"] == {"python": "3.12.3", "torch": "2.13.0", "transformers": "5.24.0"}
    assert "| torch | 2.13.0 |" in card.markdown
    tag = f"tuneyard.model_card.promotion-{promotion.pk}"
    assert tag not in client.get_model_version(version.mlflow_name, str(version.version)).tags

    # The re-send finds it missing and sends it; a second one sends nothing more.
    assert cards.model_cards_publish() == {"checked": 1, "failed": 0}
    stored = client.get_model_version(version.mlflow_name, str(version.version))
    assert stored.tags[tag] == card.digest
    assert stored.description == card.markdown
    local = Path(
        client.download_artifacts(job.mlflow_run_id, f"model_card/promotion-{promotion.pk}", str(tmp_path))
    )
    assert json.loads((local / "model_card.json").read_text()) == card.data
    assert (local / "model_card.md").read_text() == card.markdown
    assert (
        tracking.model_card_log(
            name=version.mlflow_name,
            version=version.version,
            run_id=job.mlflow_run_id,
            card_key=f"promotion-{promotion.pk}",
            markdown=card.markdown,
            data=card.data,
            digest=card.digest,
        )
        is False
    )


def test_the_worker_tags_its_runs_with_its_library_versions(mlflow_server, monkeypatch):
    from importlib.metadata import version

    from workers.tracking import RunLogger

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    with RunLogger.start(experiment="tests/libraries", run_name="r", tags={"tuneyard.job_id": "1"}) as run:
        pass
    tags = MlflowClient(mlflow_server).get_run(run.run_id).data.tags
    libraries = cards.libraries_from_tags(tags)
    assert libraries["transformers"] == version("transformers") and libraries["torch"] == version("torch")
    assert set(libraries) >= {"python", "torch", "transformers", "peft", "accelerate"}
    assert tags["tuneyard.job_id"] == "1"


def test_a_number_json_cannot_hold_is_none_on_the_card():
    data = digests.json_safe({"metrics": {"loss": float("nan"), "acc": 0.5}, "rows": [float("inf"), 1]})
    assert data == {"metrics": {"loss": None, "acc": 0.5}, "rows": [None, 1]}
    assert digests.digest_of(data) == digests.digest_of(json.loads(digests.canonical_json(data)))
