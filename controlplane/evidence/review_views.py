"""The review's page parts: the review on its own page, more prompts, and a vote (htmx swaps the card)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from controlplane.accounts.requests import AuthenticatedHttpRequest
from controlplane.errors import DomainError, Forbidden, NotFound, ValidationFailed, page_errors
from controlplane.evidence import review, review_answers, review_tally
from controlplane.evidence.models import Vote
from controlplane.registry.selectors import promotion_get


def _offset(request: AuthenticatedHttpRequest) -> int:
    raw = request.GET.get("offset", "")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 10 else 0


@login_required
@require_GET
@page_errors
def review_page(request: AuthenticatedHttpRequest, promotion_id: int) -> HttpResponse:
    """The review alone, for a link or a phone: the same part the promotion page includes."""
    promotion = promotion_get(user=request.user, promotion_id=promotion_id)
    context = review.review_context(promotion=promotion, user=request.user, offset=_offset(request))
    return render(
        request,
        "evidence/review.html",
        {"project": promotion.model_version.project, "promotion": promotion, "review": context},
    )


@login_required
@require_GET
@page_errors
def review_prompts(request: AuthenticatedHttpRequest, promotion_id: int) -> HttpResponse:
    """The next prompt cards, which the "more prompts" button swaps in for itself."""
    promotion = promotion_get(user=request.user, promotion_id=promotion_id)
    context = review.review_build(promotion=promotion, user=request.user, offset=_offset(request))
    return render(request, "evidence/_review_prompts.html", {"review": context})


@login_required
@require_POST
@page_errors
def review_vote(request: AuthenticatedHttpRequest, promotion_id: int) -> HttpResponse:
    """A vote from a prompt's card. With htmx the answer is the card with its sides shown (or the
    refusal in it) and the tally; without, a message and back to the page."""
    promotion = promotion_get(user=request.user, promotion_id=promotion_id)
    task = request.POST.get("task", "")[:100]
    raw_row = request.POST.get("row", "")
    raw_vote = request.POST.get("vote", "")
    # Sent by htmx (django-htmx's request.htmx, read from its header so the types know it).
    htmx = request.headers.get("HX-Request") == "true"
    source = review_answers.review_source(promotion=promotion)
    error = ""
    try:
        if not (raw_row.isascii() and raw_row.isdigit() and len(raw_row) < 10):
            raise ValidationFailed("row: must be a whole number.")
        if raw_vote not in Vote.values:
            raise ValidationFailed("vote: choose A, B or tie.")
        row = int(raw_row)
        review.review_vote_cast(
            promotion=promotion, user=request.user, task=task, row=row, vote=Vote(raw_vote), source=source
        )
    except (NotFound, Forbidden):
        raise
    except DomainError as exc:
        if not htmx:
            raise
        error = exc.message
    if not htmx:
        messages.success(request, "Vote counted: the sides are shown on its card.")
        # Back to the page the vote came from (the promotion page, or the review's own).
        back = request.headers.get("Referer", "")
        if url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
            return redirect(back)
        return redirect("promotion-review", promotion_id=promotion.pk)
    promotion.refresh_from_db()
    context = review.review_build(promotion=promotion, user=request.user, limit=0, source=source)
    paired = source.row_get(task, int(raw_row)) if raw_row.isdigit() and len(raw_row) < 10 else None
    prompt = None
    if paired is not None:
        mine = review.vote_list(promotion=promotion).filter(voter=request.user, task=task, row=paired.row)
        vote = mine.first()
        prompt = review.PromptView(
            paired=paired,
            side=review_tally.challenger_side(promotion_id=promotion.pk, task=task, row=paired.row),
            my_vote=vote.vote if vote else None,
            revealed=vote is not None or context.decided,
            error=error,
        )
    return render(
        request, "evidence/_review_voted.html", {"review": context, "prompt": prompt, "error": error}
    )
