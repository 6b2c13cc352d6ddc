"""The control plane's Celery app: it sends jobs to the workers and runs the reconciler.

Jobs are sent by task name, so the control plane never imports the workers'
Celery app (and the workers never import Django).
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

app = Celery("controlplane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.conf.beat_schedule = {
    "jobs-redispatch-unclaimed": {"task": "training.jobs_redispatch_unclaimed", "schedule": 60.0},
    "jobs-recover-lost": {"task": "training.jobs_recover_lost", "schedule": 30.0},
    "registry-reconcile": {"task": "registry.reconcile", "schedule": 300.0},
    "datasets-operations-reconcile": {"task": "datasets.operations_reconcile", "schedule": 60.0},
}
