"""Count the finished jobs the dashboards have not seen: those from before the dashboards app,
or any whose job-finished hook was lost in a crash. Safe to run again."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from controlplane.dashboards.services import finished_jobs_backfill


class Command(BaseCommand):
    help = "Add the finished jobs the dashboards have not counted yet (GPU-hours, cost, outcomes)."

    def handle(self, *args: Any, **options: Any) -> None:
        created = finished_jobs_backfill()
        self.stdout.write(f"{created} finished job(s) counted.")
