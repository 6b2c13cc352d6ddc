"""Blind side-by-side review: the challenger's and the champion's answers, sides hidden, votes.

Where the answers come from: for a promotion, the challenger is its model version and the
champion the version deployed to its target (when the promotion was decided: the one deployed
just before). For every suite of the model on which both have a succeeded run, each generation
task's predictions tables (``tracking.table_read``) are paired by ``row``.

Blindness: which side (A or B) shows the challenger is a keyed hash of the promotion, the task and
the row (``challenger_side``): the same on every reload, not guessable from anything the page or
the URL carries. It is shown to a voter only once they have voted on that prompt, and to everyone
once the promotion is decided. Whatever would tell the sides of an unvoted prompt (its per-row
scores, a flip naming it, other people's votes) is held back the same way.

A vote is final: a second vote on the same prompt is refused (the voter has seen the sides by
then, so a changed vote would no longer be blind), and no vote is taken once the promotion is
being decided. The vote row, with its voter and time, is its own audit record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from controlplane.accounts.models import Role, User
from controlplane.accounts.selectors import membership_role, project_role_check
from controlplane.errors import Conflict, Forbidden, ValidationFailed
from controlplane.evidence.digests import digest_of
from controlplane.evidence.models import ReviewVote, Vote
from controlplane.evidence.review_answers import Answer, PairedRow, ReviewSource, TableReads, review_source
from controlplane.evidence.review_tally import (
    Side,
    Tally,
    challenger_side,
    vote_verdict,
)
from controlplane.registry.models import Promotion, PromotionStatus

# Prompt cards per page part (the promotion page, the "more" button, the API's default page).
PROMPTS_PER_PAGE = 10


# --- votes (the service) -------------------------------------------------------------------------


def vote_list(*, promotion: Promotion) -> QuerySet[ReviewVote]:
    return ReviewVote.objects.filter(promotion=promotion).select_related("voter")


def _voting_closed(promotion: Promotion) -> str:
    if promotion.status == PromotionStatus.REQUESTED:
        return ""
    if promotion.status == PromotionStatus.APPROVING:
        return "This promotion is being decided: its review is closed."
    return f"This promotion is {promotion.status}: its review is closed and its votes are final."


def vote_refusal(*, promotion: Promotion, user: User) -> str:
    """Why ``user`` may not vote on ``promotion``'s prompts now; empty when they may."""
    if closed := _voting_closed(promotion):
        return closed
    role = membership_role(user=user, project=promotion.model_version.project)
    if role is None or not role.includes(Role.APPROVER):
        return "Only approvers vote."
    if promotion.requested_by_id == user.pk:
        return "You asked for this promotion: other approvers review it (four eyes)."
    return ""


def review_vote_cast(
    *,
    promotion: Promotion,
    user: User,
    task: str,
    row: int,
    vote: Vote,
    source: ReviewSource | None = None,
) -> ReviewVote:
    """Record ``user``'s blind vote on one prompt; returns it with the challenger's side.

    Refused to anyone but an approver, to the requester, on a prompt that is not in the
    review, a second time on the same prompt, and once the promotion is no longer requested.
    """
    project_role_check(user=user, project=promotion.model_version.project, role=Role.APPROVER)
    if promotion.requested_by_id == user.pk:
        raise Forbidden("You asked for this promotion: other approvers review it (four eyes).")
    if closed := _voting_closed(promotion):
        raise Conflict(closed)
    # The prompt must be one of the review's: read before any transaction (network calls).
    source = source or review_source(promotion=promotion)
    if source.row_get(task, row) is None:
        raise ValidationFailed(f"This review has no prompt {task!r} row {row}.")
    side = challenger_side(promotion_id=promotion.pk, task=task, row=row)
    with transaction.atomic():
        # The promotion's row lock orders this vote against a decision claiming it (a
        # conditional update of the same row): a vote never lands after the decision.
        locked = Promotion.objects.select_for_update().get(pk=promotion.pk)
        if closed := _voting_closed(locked):
            raise Conflict(closed)
        earlier = ReviewVote.objects.filter(promotion=locked, task=task, row=row, voter=user).first()
        if earlier is not None:
            raise _already_voted(earlier)
        try:
            with transaction.atomic():
                return ReviewVote.objects.create(
                    promotion=locked, task=task, row=row, voter=user, challenger_side=side, vote=vote
                )
        except IntegrityError:
            # Two votes of the same person racing: the first one stands.
            pass
    earlier = ReviewVote.objects.get(promotion=promotion, task=task, row=row, voter=user)
    raise _already_voted(earlier)


def _already_voted(vote: ReviewVote) -> Conflict:
    return Conflict(
        f"You voted {vote.get_vote_display()} on this prompt already; a vote is final once the sides "
        "are shown, so nothing changed."
    )


# --- what the page and the API show ----------------------------------------------------------------


@dataclass(frozen=True)
class PromptView:
    """One prompt as ``user`` sees it: answers as sides A and B; the sides told once revealed."""

    paired: PairedRow
    side: Side
    my_vote: str | None
    revealed: bool
    error: str = ""

    @property
    def task(self) -> str:
        return self.paired.task

    @property
    def row(self) -> int:
        return self.paired.row

    @property
    def a(self) -> Answer:
        return self.paired.challenger if self.side == "a" else self.paired.champion

    @property
    def b(self) -> Answer:
        return self.paired.champion if self.side == "a" else self.paired.challenger

    @property
    def challenger_label(self) -> str:
        return self.side.upper()

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "row": self.row,
            "suite": self.paired.suite,
            "input": self.paired.input,
            "reference": self.paired.reference,
            "answer_a": self.a.text,
            "answer_b": self.b.text,
            "my_vote": self.my_vote,
            "challenger_side": self.side if self.revealed else None,
            "score_a": self.a.score if self.revealed else None,
            "score_b": self.b.score if self.revealed else None,
        }


@dataclass(frozen=True)
class FlipView:
    task: str
    row: int
    input: str
    kind: str  # right_to_wrong | wrong_to_right

    @property
    def label(self) -> str:
        return "right → wrong" if self.kind == "right_to_wrong" else "wrong → right"


@dataclass(frozen=True)
class JudgeAgreement:
    """How often the judge's verdict on a row matched the human votes on it (each vote counted)."""

    suite: str
    task: str
    of_task: str
    job_id: int
    pairs: int
    tally: Tally  # the judge's own verdicts, in the challenger's terms
    compared: int
    agreed: int

    @property
    def rate(self) -> float | None:
        return self.agreed / self.compared if self.compared else None


@dataclass
class ReviewContext:
    """What ``evidence/_review.html`` shows as ``review``."""

    promotion: Promotion
    source: ReviewSource
    tally: Tally
    prompts: list[PromptView]
    offset: int
    total: int
    voted_by_me: int
    refusal: str
    right_to_wrong: int
    wrong_to_right: int
    flips: list[FlipView]
    hidden_flips: int
    judges: list[JudgeAgreement]

    @property
    def can_vote(self) -> bool:
        return not self.refusal

    @property
    def next_offset(self) -> int | None:
        end = self.offset + len(self.prompts)
        return end if end < self.total else None

    @property
    def decided(self) -> bool:
        return not PromotionStatus(self.promotion.status).is_open


def _revealed_rows(
    promotion: Promotion, user: User, votes: Sequence[ReviewVote]
) -> set[tuple[str, int]] | None:
    """The prompts whose sides ``user`` may see; None: all of them (the promotion is decided)."""
    if not PromotionStatus(promotion.status).is_open:
        return None
    return {(v.task, v.row) for v in votes if v.voter_id == user.pk}


def review_build(
    *,
    promotion: Promotion,
    user: User,
    offset: int = 0,
    limit: int = PROMPTS_PER_PAGE,
    source: ReviewSource | None = None,
    tables: TableReads | None = None,
) -> ReviewContext:
    """The review as ``user`` may see it, with ``limit`` prompts from ``offset`` (in task, row order)."""
    project_role_check(user=user, project=promotion.model_version.project, role=Role.VIEWER)
    source = source or review_source(promotion=promotion, tables=tables)
    votes = list(vote_list(promotion=promotion))
    revealed = _revealed_rows(promotion, user, votes)
    mine = {(v.task, v.row): v.vote for v in votes if v.voter_id == user.pk}
    page = source.rows[max(offset, 0) : max(offset, 0) + limit]
    prompts = [
        PromptView(
            paired=p,
            side=challenger_side(promotion_id=promotion.pk, task=p.task, row=p.row),
            my_vote=mine.get((p.task, p.row)),
            revealed=revealed is None or (p.task, p.row) in revealed,
        )
        for p in page
    ]
    flips = [(p, p.flip) for p in source.rows if p.flip]
    shown = [
        FlipView(p.task, p.row, p.input, kind)
        for p, kind in flips
        if kind and (revealed is None or (p.task, p.row) in revealed)
    ]
    verdicts = [vote_verdict(vote=v.vote, challenger_side=v.challenger_side) for v in votes]
    return ReviewContext(
        promotion=promotion,
        source=source,
        tally=Tally.of(verdicts),
        prompts=prompts,
        offset=max(offset, 0),
        total=len(source.rows),
        voted_by_me=len(mine),
        refusal=vote_refusal(promotion=promotion, user=user),
        right_to_wrong=sum(kind == "right_to_wrong" for _, kind in flips),
        wrong_to_right=sum(kind == "wrong_to_right" for _, kind in flips),
        flips=shown,
        hidden_flips=len(flips) - len(shown),
        judges=_judge_agreements(source, votes),
    )


def _judge_agreements(source: ReviewSource, votes: Sequence[ReviewVote]) -> list[JudgeAgreement]:
    found = []
    for judge in source.judges:
        compared = agreed = 0
        for v in votes:
            verdict = judge.verdicts.get(v.row) if v.task == judge.of_task else None
            if verdict is not None:
                compared += 1
                agreed += verdict == vote_verdict(vote=v.vote, challenger_side=v.challenger_side)
        found.append(
            JudgeAgreement(
                suite=judge.suite,
                task=judge.task,
                of_task=judge.of_task,
                job_id=judge.job_id,
                pairs=len(judge.verdicts),
                tally=Tally.of(judge.verdicts.values()),
                compared=compared,
                agreed=agreed,
            )
        )
    return found


def review_context(*, promotion: Promotion, user: User, offset: int = 0) -> ReviewContext | None:
    """What ``evidence/_review.html`` shows ``user`` as ``review``: the prompts to vote on, the
    tally once voted. None when the promotion has no suite answers to compare."""
    context = review_build(promotion=promotion, user=user, offset=offset)
    if not context.total and not context.tally.votes:
        return None
    return context


def review_summary(*, promotion: Promotion) -> dict[str, Any]:
    """The votes as a model card cites them: the tally and the SHA-256 of the votes' canonical JSON.

    Reads committed rows only (no network), so it can run inside the decision's transaction.
    """
    votes = list(vote_list(promotion=promotion).order_by("task", "row", "voter__username", "pk"))
    rows = [vote_export_row(v) for v in votes]
    tally = Tally.of(vote_verdict(vote=v.vote, challenger_side=v.challenger_side) for v in votes)
    return tally.as_dict() | {"digest": digest_of(rows)}


EXPORT_COLUMNS = ("task", "row", "voter", "vote", "challenger_side", "verdict", "at")


def vote_export_row(vote: ReviewVote) -> dict[str, Any]:
    return {
        "task": vote.task,
        "row": vote.row,
        "voter": vote.voter.username,
        "vote": vote.vote,
        "challenger_side": vote.challenger_side,
        "verdict": vote_verdict(vote=vote.vote, challenger_side=vote.challenger_side),
        "at": vote.at.isoformat(),
    }


def vote_export_rows(*, promotion: Promotion, user: User) -> QuerySet[ReviewVote]:
    """The votes ``user`` may export: everyone's once the promotion is decided; before, only their
    own (anyone else's would tell them the sides of prompts they have not voted on)."""
    votes = vote_list(promotion=promotion)
    if PromotionStatus(promotion.status).is_open:
        votes = votes.filter(voter=user)
    return votes
