"""Send to MLflow the model cards it does not hold: those whose send on approval failed (MLflow
was away). A card MLflow has already (its version carries the card's digest) is not sent again."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from controlplane.evidence.cards import model_cards_publish


class Command(BaseCommand):
    help = "Send the model cards MLflow does not hold yet; safe to run again (cron or by hand)."

    def handle(self, *args: Any, **options: Any) -> None:
        counts = model_cards_publish()
        self.stdout.write(f"{counts['checked']} card(s) checked, {counts['failed']} still not in MLflow.")
        if counts["failed"]:
            raise CommandError("Some cards did not reach MLflow; see the log, and run this again.")
