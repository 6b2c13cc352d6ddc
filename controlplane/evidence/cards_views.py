"""The model card's page: the card's JSON rendered by a template (every value escaped by it)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from controlplane.accounts.models import Role
from controlplane.accounts.requests import AuthenticatedHttpRequest
from controlplane.accounts.selectors import project_get
from controlplane.errors import page_errors
from controlplane.evidence import card_markdown, cards
from controlplane.evidence.models import ModelCard


def card_context(card: ModelCard) -> dict[str, Any]:
    """What the card templates show, all of it from the card's own data (never from live rows)."""
    data = card.data
    datasets = [
        {
            **dataset,
            "checks": [
                {**check, "summary": card_markdown.check_summary(check)} for check in dataset["checks"]
            ],
        }
        for dataset in data["datasets"]
    ]
    suites = [
        {**suite, "runs": [("This version's", suite["challenger"]), ("the champion's", suite["champion"])]}
        for suite in data["suites"]
    ]
    libraries = data["libraries"]
    return {
        "card": card,
        "data": data,
        "datasets": datasets,
        "suites": suites,
        "gate_rules": card_markdown.gate_rules(data["gate"]),
        "hyperparameters": sorted(data["training"]["hyperparameters"].items()),
        "training_metrics": sorted(data["training"]["metrics"].items()),
        "libraries": sorted(libraries.items()) if isinstance(libraries, dict) else None,
    }


@login_required
@require_GET
@page_errors
def promotion_card(request: AuthenticatedHttpRequest, slug: str, promotion_id: int) -> HttpResponse:
    project = project_get(user=request.user, slug=slug, role=Role.VIEWER)
    card = cards.model_card_of_promotion(user=request.user, promotion_id=promotion_id, project=project)
    return render(request, "evidence/card.html", {"project": project, **card_context(card)})
