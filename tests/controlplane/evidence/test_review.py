"""Blind side-by-side review: the answers of two suite runs paired from predictions tables stored
in a real MLflow server, sides fixed and hidden until the vote, final votes, the tally with its
Wilson interval, flips, the judge's agreement, export, and who may do what."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from controlplane import tracking
from controlplane.accounts.models import Membership, Role
from controlplane.accounts.services import member_add
from controlplane.evidence import review, review_answers, review_tally
from controlplane.evidence.models import ReviewVote, Suite, SuiteRun, SuiteRunJob, SuiteRunStatus
from controlplane.registry.models import Deployment, ModelVersion, Promotion, PromotionStatus
from controlplane.registry.services import promotion_reject
from controlplane.training.models import Job, JobStatus
from tests.conftest import PASSWORD
from tests.factories import dataset_version_make, job_make, promotion_make

pytestmark = pytest.mark.django_db

MODEL = "tiny-lora"
# Per row of the "answers" task: was the champion right, was the challenger right.
CHAMPION_RIGHT = [1, 1, 1, 1, 0, 0, 0, 0]
CHALLENGER_RIGHT = [1, 1, 0, 1, 1, 1, 0, 1]  # row 2: right -> wrong; rows 4, 5, 7: wrong -> right
JUDGE = ["challenger", "champion", "tie", "challenger", "challenger", "challenger", "tie", "champion"]
COLUMNS = ("row", "input", "prediction", "reference", "score")
PHRASING = {"challenger": "The answer is {}.", "champion": "{}"}


def table_upload(rows: list[dict[str, Any]], name: str) -> str:
    """A predictions table as an evaluate job logs it (MLflow's split layout), in the real server."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "predictions.json"
        body = {"columns": list(COLUMNS), "data": [[r.get(c) for c in COLUMNS] for r in rows]}
        path.write_text(json.dumps(body))
        return tracking.artifact_upload(
            path, experiment="review-tests", run_name=name, artifact_path="predictions", tags={}
        )


def _answers(who: str, right: list[int], extra: int = 0) -> list[dict[str, Any]]:
    rows = [
        {
            "row": n,
            "input": f"Question {n}: what is {n} + {n}?",
            # Worded differently per model, so a test can tell them apart; nothing says which is which.
            "prediction": (PHRASING[who]).format(2 * n if ok else 2 * n + 1),
            "reference": f"{2 * n}",
            "score": float(ok),
        }
        for n, ok in enumerate(right)
    ]
    # A row only one side answered is not a prompt.
    rows += [
        {"row": 100 + k, "input": "?", "prediction": who, "reference": "", "score": 0.0} for k in range(extra)
    ]
    return rows


def _evaluate_job(project, user, *, metrics: list[str], uri: str, config: dict | None = None) -> Job:
    job = job_make(project, user)
    Job.objects.filter(pk=job.pk).update(
        kind="evaluate",
        status=JobStatus.SUCCEEDED,
        config=config or {"evaluation": {"metrics": metrics}},
        artifacts={"predictions": uri},
    )
    return Job.objects.get(pk=job.pk)


def review_seed(
    people, *, requester: str = "alice", rows: tuple[list[int], list[int]] | None = None
) -> Promotion:
    """A champion deployed to production, a challenger asking for it, one suite both ran: a generation
    task ("answers"), a multiple-choice task (no prompts) and a judge of "answers" in the challenger's run."""
    project, alice, carol = people["demo"], people["alice"], people["carol"]
    champion_right, challenger_right = rows or (CHAMPION_RIGHT, CHALLENGER_RIGHT)
    versions = []
    for number in (1, 2):
        trained = job_make(project, alice)
        versions.append(
            ModelVersion.objects.create(
                project=project,
                name=MODEL,
                version=number,
                job=trained,
                source_uri="runs:/x/adapter",
                mlflow_name=f"demo.{MODEL}",
                created_by=alice,
            )
        )
    champion, challenger = versions
    earlier = Promotion.objects.create(
        model_version=champion,
        target="production",
        status=PromotionStatus.APPROVED,
        requested_by=alice,
        decided_by=carol,
        decided_at=timezone.now() - timedelta(days=1),
    )
    Deployment.objects.create(
        project=project,
        model_name=MODEL,
        target="production",
        model_version=champion,
        promotion=earlier,
        approved_by=carol,
        approved_at=earlier.decided_at,
    )
    data = dataset_version_make(project, alice)
    suite = Suite.objects.create(
        project=project,
        model_name=MODEL,
        name="qa",
        version=1,
        tasks=[
            {"name": "answers", "dataset_version": data.pk, "evaluation": {"metrics": ["exact_match"]}},
            {"name": "choices", "dataset_version": data.pk, "evaluation": {"metrics": ["multiple_choice"]}},
            {
                "name": "answers-judge",
                "judge": {"base_model": 1},
                "rubric": "Which is right?",
                "of_task": "answers",
            },
        ],
        digest="0" * 64,
        created_by=alice,
    )
    choices = [
        {"row": n, "input": "pick", "prediction": "x", "reference": "x", "score": 1.0} for n in range(3)
    ]
    for version, who, right in (
        (challenger, "challenger", challenger_right),
        (champion, "champion", champion_right),
    ):
        em = sum(right) / len(right)
        run = SuiteRun.objects.create(
            suite=suite,
            model_version=version,
            status=SuiteRunStatus.SUCCEEDED,
            results={"answers": {"exact_match": em, "bleu": 10.0 * em}, "choices": {"multiple_choice": 0.5}},
            digest=f"{version.pk:064d}",
            created_by=alice,
            finished_at=timezone.now(),
        )
        answers_uri = table_upload(_answers(who, right, extra=1 if who == "challenger" else 0), who)
        SuiteRunJob.objects.create(
            run=run,
            task="answers",
            job=_evaluate_job(project, alice, metrics=["exact_match"], uri=answers_uri),
        )
        SuiteRunJob.objects.create(
            run=run,
            task="choices",
            job=_evaluate_job(
                project, alice, metrics=["multiple_choice"], uri=table_upload(choices, f"{who}-choices")
            ),
        )
        if who == "challenger":
            verdicts = [
                {"row": n, "input": "pair", "prediction": v, "reference": "", "score": 0.5}
                for n, v in enumerate(JUDGE)
            ]
            judge = _evaluate_job(
                project,
                alice,
                metrics=["exact_match"],
                uri=table_upload(verdicts, "judge"),
                config={"judge": {}},
            )
            SuiteRunJob.objects.create(run=run, task="answers-judge", job=judge)
    return promotion_make(challenger, people[requester])


def _approver(people, name: str = "dora"):
    """Another approver of "demo", known to ``api_for`` by name."""
    people[name] = member_add(project=people["demo"], username=name, role=Role.APPROVER, password=PASSWORD)
    return people[name]


def _vote_for(promotion: Promotion, row: int, verdict: str) -> str:
    """The vote (a, b or tie) that means ``verdict`` on ``row`` of "answers"."""
    if verdict == "tie":
        return "tie"
    side = review_tally.challenger_side(promotion_id=promotion.pk, task="answers", row=row)
    return side if verdict == "challenger" else ("b" if side == "a" else "a")


# --- pure: sides, the interval, the tally ---------------------------------------------------------


def test_sides_are_the_same_on_every_reload_and_about_half_each_way():
    sides = [review_tally.challenger_side(promotion_id=7, task="answers", row=n) for n in range(2000)]
    assert sides == [review_tally.challenger_side(promotion_id=7, task="answers", row=n) for n in range(2000)]
    assert 0.45 < sides.count("a") / len(sides) < 0.55
    # Another promotion shuffles its prompts differently.
    other = [review_tally.challenger_side(promotion_id=8, task="answers", row=n) for n in range(2000)]
    assert 0.4 < sum(x != y for x, y in zip(sides, other, strict=True)) / len(sides) < 0.6


def test_sides_depend_on_the_sites_secret_so_no_one_can_compute_them():
    sides = [review_tally.challenger_side(promotion_id=7, task="answers", row=n) for n in range(64)]
    with override_settings(SECRET_KEY="another secret, another deployment, 0123456789abcdef"):
        assert sides != [
            review_tally.challenger_side(promotion_id=7, task="answers", row=n) for n in range(64)
        ]


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        # Newcombe (1998), "Two-sided confidence intervals for the single proportion", table I, method 3.
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        (5, 10, 0.2366, 0.7634),
    ],
)
def test_the_win_rate_interval_is_wilsons(successes, n, low, high):
    got = review_tally.wilson_interval(successes, n)
    assert got == pytest.approx((low, high), abs=1e-4)


def test_the_tally_counts_a_tie_as_half_a_win():
    tally = review_tally.Tally.of(["challenger"] * 6 + ["tie"] * 2 + ["champion"] * 2)
    assert (tally.votes, tally.wins, tally.ties, tally.losses) == (10, 6, 2, 2)
    assert tally.win_rate == pytest.approx(0.7)
    assert (tally.low, tally.high) == pytest.approx(review_tally.wilson_interval(7, 10))
    assert review_tally.Tally.of([]).win_rate is None


def test_a_vote_is_read_in_the_challengers_terms_whatever_side_it_was_on():
    assert review_tally.vote_verdict(vote="a", challenger_side="a") == "challenger"
    assert review_tally.vote_verdict(vote="a", challenger_side="b") == "champion"
    assert review_tally.vote_verdict(vote="tie", challenger_side="b") == "tie"


# --- the answers, from real tables ----------------------------------------------------------------


def test_prompts_pair_the_generation_tasks_rows_and_deltas_come_from_the_runs(people, mlflow_server):
    promotion = review_seed(people)
    source = review_answers.review_source(promotion=promotion)
    assert source.champion is not None and source.champion.version == 1
    assert [(r.task, r.row) for r in source.rows] == [("answers", n) for n in range(8)]
    assert source.rows[3].challenger.text == "The answer is 6."
    assert source.rows[3].champion.text == "6"
    deltas = {(d.task, d.metric): d.delta for d in source.deltas}
    assert deltas == {
        ("answers", "bleu"): pytest.approx(2.5),
        ("answers", "exact_match"): pytest.approx(0.25),
        ("choices", "multiple_choice"): 0.0,
    }
    assert [(j.task, j.of_task, len(j.verdicts)) for j in source.judges] == [("answers-judge", "answers", 8)]
    assert not source.notes


def test_flips_are_counted_by_the_rows_scores(people, mlflow_server):
    promotion = review_seed(people)
    flips = {(r.row, r.flip) for r in review_answers.review_source(promotion=promotion).rows if r.flip}
    assert flips == {
        (2, "right_to_wrong"),
        (4, "wrong_to_right"),
        (5, "wrong_to_right"),
        (7, "wrong_to_right"),
    }


def test_no_champion_means_nothing_to_review(people, mlflow_server):
    promotion = review_seed(people)
    Deployment.objects.all().delete()
    assert review.review_context(promotion=promotion, user=people["carol"]) is None
    assert "Nothing is deployed" in review_answers.review_source(promotion=promotion).notes[0]


def test_once_approved_the_champion_is_the_version_deployed_before(people, mlflow_server):
    promotion = review_seed(people)
    Promotion.objects.filter(pk=promotion.pk).update(
        status=PromotionStatus.APPROVED, decided_by=people["carol"], decided_at=timezone.now()
    )
    Deployment.objects.update(model_version=promotion.model_version, promotion=promotion)
    promotion.refresh_from_db()
    champion = review_answers.review_champion(promotion=promotion)
    assert champion is not None and champion.version == 1


# --- the API --------------------------------------------------------------------------------------


def _review(api, promotion, **query) -> dict:
    answer = api.get(f"/api/v1/promotions/{promotion.pk}/review", query)
    assert answer.status_code == 200, answer.content
    return answer.json()


def _vote(api, promotion, **body):
    return api.post(f"/api/v1/promotions/{promotion.pk}/review/votes", body, format="json")


def test_the_sides_are_hidden_until_you_vote_then_shown_for_that_prompt_only(people, api_for, mlflow_server):
    promotion = review_seed(people)
    before = _review(api_for("carol"), promotion)
    assert before["can_vote"] and before["champion"]["mlflow_version"] == 1
    prompts = before["prompts"]["results"]
    assert len(prompts) == 8 and before["prompts"]["total"] == 8
    assert all(p["challenger_side"] is None and p["score_a"] is None for p in prompts)
    # Each side shows one model's answer, as the hidden side says.
    for p in prompts:
        side = review_tally.challenger_side(promotion_id=promotion.pk, task="answers", row=p["row"])
        assert p[f"answer_{side}"].startswith("The answer is")
    # The flips would tell the sides: none is listed before a vote.
    assert before["flips"] == {"right_to_wrong": 1, "wrong_to_right": 3, "rows": [], "hidden": 4}

    answer = _vote(api_for("carol"), promotion, task="answers", row=2, vote="a")
    assert answer.status_code == 201, answer.content
    side = review_tally.challenger_side(promotion_id=promotion.pk, task="answers", row=2)
    assert answer.json()["challenger_side"] == side
    assert answer.json()["verdict"] == ("challenger" if side == "a" else "champion")

    after = _review(api_for("carol"), promotion)
    shown = {p["row"]: p for p in after["prompts"]["results"] if p["challenger_side"]}
    assert list(shown) == [2] and shown[2]["my_vote"] == "a"
    assert after["flips"]["rows"] == [{"task": "answers", "row": 2, "kind": "right_to_wrong"}]
    # Someone else who has not voted still sees no side.
    assert all(p["challenger_side"] is None for p in _review(api_for("bob"), promotion)["prompts"]["results"])


def test_the_tally_and_the_judges_agreement_follow_the_votes(people, api_for, mlflow_server):
    promotion = review_seed(people)
    _approver(people)
    # carol: row 0 for the challenger (the judge agrees), row 1 for the challenger (the judge said champion).
    for row, verdict in ((0, "challenger"), (1, "challenger"), (2, "tie")):
        assert (
            _vote(
                api_for("carol"), promotion, task="answers", row=row, vote=_vote_for(promotion, row, verdict)
            ).status_code
            == 201
        )
    assert (
        _vote(
            api_for("dora"), promotion, task="answers", row=0, vote=_vote_for(promotion, 0, "champion")
        ).status_code
        == 201
    )
    answer = _review(api_for("bob"), promotion)
    tally = answer["tally"]
    assert (tally["votes"], tally["wins"], tally["ties"], tally["losses"]) == (4, 2, 1, 1)
    assert tally["win_rate"] == pytest.approx(2.5 / 4)
    assert (tally["ci_low"], tally["ci_high"]) == pytest.approx(review_tally.wilson_interval(2.5, 4))
    (judge,) = answer["judges"]
    # Judge: row 0 challenger (carol agrees, dora not), row 1 champion (carol not), row 2 tie (carol agrees).
    assert (judge["compared"], judge["agreed"]) == (4, 2)
    assert judge["judge_win_rate"] == pytest.approx((4 + 2 / 2) / 8)


def test_a_second_vote_on_a_prompt_changes_nothing_and_says_so(people, api_for, mlflow_server):
    promotion = review_seed(people)
    assert _vote(api_for("carol"), promotion, task="answers", row=3, vote="a").status_code == 201
    for vote in ("a", "b", "tie"):
        again = _vote(api_for("carol"), promotion, task="answers", row=3, vote=vote)
        assert again.status_code == 409
        assert "already" in again.json()["message"]
    assert list(ReviewVote.objects.values_list("vote", flat=True)) == ["a"]


def test_the_requester_may_not_vote_on_their_own_request(people, api_for, mlflow_server):
    Membership.objects.filter(user=people["alice"], project=people["demo"]).update(role=Role.APPROVER)
    promotion = review_seed(people, requester="alice")
    answer = _vote(api_for("alice"), promotion, task="answers", row=0, vote="a")
    assert answer.status_code == 403 and "four eyes" in answer.json()["message"]
    assert "four eyes" in _review(api_for("alice"), promotion)["why_not"]
    assert not ReviewVote.objects.exists()


def test_only_approvers_vote(people, api_for, mlflow_server):
    promotion = review_seed(people)
    for name in ("bob", "viv"):
        assert _vote(api_for(name), promotion, task="answers", row=0, vote="a").status_code == 403
    assert not ReviewVote.objects.exists()


def test_votes_are_final_once_the_promotion_is_decided(people, api_for, mlflow_server):
    promotion = review_seed(people)
    _approver(people)
    assert _vote(api_for("carol"), promotion, task="answers", row=0, vote="b").status_code == 201
    promotion_reject(promotion=promotion, user=people["carol"], comment="worse on row 2")
    answer = _vote(api_for("dora"), promotion, task="answers", row=1, vote="a")
    assert answer.status_code == 409 and "rejected" in answer.json()["message"]
    assert ReviewVote.objects.count() == 1
    # Decided: every side is shown to every reader, and the flips are listed.
    decided = _review(api_for("bob"), promotion)
    assert not decided["can_vote"]
    assert all(p["challenger_side"] in ("a", "b") for p in decided["prompts"]["results"])
    assert len(decided["flips"]["rows"]) == 4 and decided["flips"]["hidden"] == 0


def test_bad_votes_are_400s_and_change_nothing(people, api_for, mlflow_server):
    promotion = review_seed(people)
    carol = api_for("carol")
    for body in (
        {"task": "answers", "row": 0},
        {"task": "answers", "row": 0, "vote": "c"},
        {"task": "answers", "row": -1, "vote": "a"},
        {"task": "answers", "row": "x", "vote": "a"},
        {"task": "answers", "row": 1.5, "vote": "a"},
        {"task": "answers", "row": 0, "vote": "a", "extra": 1},
        {"task": "", "row": 0, "vote": "a"},
        {"task": "answers", "row": 100, "vote": "a"},  # answered by one side only
        {"task": "choices", "row": 0, "vote": "a"},  # multiple choice: not a prompt
        {"task": "nope", "row": 0, "vote": "a"},
    ):
        answer = _vote(carol, promotion, **body)
        assert answer.status_code == 400, (body, answer.content)
        assert set(answer.json()) >= {"error", "message"}
    assert (
        carol.post(f"/api/v1/promotions/{promotion.pk}/review/votes", [1], format="json").status_code == 400
    )
    for query in ({"cursor": "x"}, {"limit": "0"}, {"limit": "100000"}):
        assert carol.get(f"/api/v1/promotions/{promotion.pk}/review", query).status_code == 400
    assert not ReviewVote.objects.exists()


def test_prompts_come_in_pages(people, api_for, mlflow_server):
    promotion = review_seed(people)
    first = _review(api_for("carol"), promotion, limit=5)
    assert [p["row"] for p in first["prompts"]["results"]] == [0, 1, 2, 3, 4]
    second = api_for("carol").get(first["prompts"]["next"]).json()
    assert [p["row"] for p in second["prompts"]["results"]] == [5, 6, 7]
    assert second["prompts"]["next"] is None


def test_an_outsider_gets_404_everywhere(people, api_for, mlflow_server):
    promotion = review_seed(people)
    charlie = api_for("charlie")
    base = f"/api/v1/promotions/{promotion.pk}/review"
    assert charlie.get(base).status_code == 404
    assert charlie.get(f"{base}/votes").status_code == 404
    assert charlie.get(f"{base}/votes", {"format": "csv"}).status_code == 404
    assert _vote(charlie, promotion, task="answers", row=0, vote="a").status_code == 404
    assert not ReviewVote.objects.exists()


def test_votes_export_as_csv_and_json_only_ones_own_until_the_decision(people, api_for, mlflow_server):
    promotion = review_seed(people)
    _approver(people)
    _vote(api_for("carol"), promotion, task="answers", row=0, vote="a")
    _vote(api_for("carol"), promotion, task="answers", row=1, vote="tie")
    _vote(api_for("dora"), promotion, task="answers", row=0, vote="b")
    url = f"/api/v1/promotions/{promotion.pk}/review/votes"
    mine = api_for("dora").get(url).json()
    assert [(v["voter"], v["row"], v["vote"]) for v in mine["results"]] == [("dora", 0, "b")]

    promotion_reject(promotion=promotion, user=people["carol"])
    every = api_for("bob").get(url, {"limit": 2}).json()
    assert len(every["results"]) == 2 and every["next"]
    assert len(api_for("bob").get(every["next"]).json()["results"]) == 1
    answer = api_for("bob").get(url, {"format": "csv"})
    assert answer.status_code == 200 and answer["Content-Type"].startswith("text/csv")
    assert "attachment" in answer["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.content.decode())))
    assert [(r["voter"], r["row"], r["vote"]) for r in rows] == [
        ("carol", "0", "a"),
        ("dora", "0", "b"),
        ("carol", "1", "tie"),
    ]
    side = review_tally.challenger_side(promotion_id=promotion.pk, task="answers", row=0)
    assert rows[0]["challenger_side"] == side
    assert rows[0]["verdict"] == ("challenger" if side == "a" else "champion")
    bad = api_for("bob").get(url, {"format": "xml"})
    assert bad.status_code == 400 and bad.json()["error"] == "validation_failed"


def test_the_cards_summary_has_a_digest_of_the_votes(people, api_for, mlflow_server):
    promotion = review_seed(people)
    empty = review.review_summary(promotion=promotion)
    _vote(api_for("carol"), promotion, task="answers", row=0, vote="a")
    summary = review.review_summary(promotion=promotion)
    assert summary["votes"] == 1 and summary["digest"] != empty["digest"]
    assert review.review_summary(promotion=promotion) == summary


# --- the page -------------------------------------------------------------------------------------


def test_the_page_shows_cards_and_a_vote_by_htmx_reveals_its_sides(people, client, mlflow_server):
    promotion = review_seed(people)
    client.force_login(people["carol"])
    page = client.get(f"/promotions/{promotion.pk}/review")
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count('<article class="review-prompt') == 8 and "A is better" in html
    assert "The answer is" in html and "· challenger" not in html

    answer = client.post(
        f"/promotions/{promotion.pk}/review/vote",
        {"task": "answers", "row": "4", "vote": "tie"},
        HTTP_HX_REQUEST="true",
    )
    assert answer.status_code == 200
    card = answer.content.decode()
    assert "· challenger" in card and "· champion" in card and "A is better" not in card
    assert 'id="review-tally"' in card and 'hx-swap-oob="true"' in card and "data-votes>1<" in card

    again = client.post(
        f"/promotions/{promotion.pk}/review/vote",
        {"task": "answers", "row": "4", "vote": "a"},
        HTTP_HX_REQUEST="true",
    )
    assert "already" in again.content.decode() and ReviewVote.objects.count() == 1
    bad = client.post(f"/promotions/{promotion.pk}/review/vote", {"task": "answers", "row": "x", "vote": "a"})
    assert bad.status_code == 302 and ReviewVote.objects.count() == 1


def test_an_outsider_gets_404_on_the_pages(people, client, mlflow_server):
    promotion = review_seed(people)
    client.force_login(people["charlie"])
    assert client.get(f"/promotions/{promotion.pk}/review").status_code == 404
    assert client.get(f"/promotions/{promotion.pk}/review/prompts").status_code == 404
    vote = client.post(
        f"/promotions/{promotion.pk}/review/vote", {"task": "answers", "row": "0", "vote": "a"}
    )
    assert vote.status_code == 404 and not ReviewVote.objects.exists()


def test_more_prompts_come_from_an_offset(people, client, mlflow_server):
    promotion = review_seed(people)
    client.force_login(people["bob"])
    more = client.get(f"/promotions/{promotion.pk}/review/prompts", {"offset": "5"}).content.decode()
    assert more.count('<article class="review-prompt') == 3 and 'data-row="5"' in more
    # bob is not an approver: he reads the answers but has no buttons.
    assert "A is better" not in more
    assert client.get(f"/promotions/{promotion.pk}/review/prompts", {"offset": "x"}).status_code == 200
