"""``manage.py seed_demo``: the laptop's demo users, project, tiny base model and dataset."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from controlplane.site.demo import ADMIN_PASSWORD, DEMO_PASSWORD, DEMO_USERS, demo_seed


class Command(BaseCommand):
    help = "Create the demo project, its users, a tiny base model and a small dataset (idempotent)."

    def handle(self, *args: object, **options: object) -> None:
        seeded = demo_seed()
        self.stdout.write(
            f"Demo project '{seeded['project'].slug}': base model {seeded['base_model'].name}, "
            f"dataset {seeded['dataset']}."
        )
        roles = ", ".join(f"{name} ({role.value})" for name, role in DEMO_USERS.items())
        self.stdout.write(f"Users {roles}, password '{DEMO_PASSWORD}'; admin password '{ADMIN_PASSWORD}'.")
