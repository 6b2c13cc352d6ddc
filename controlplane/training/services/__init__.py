"""Every write to jobs, by concern; the names other modules use are re-exported here.

- ``transitions``: the state machine (``job_transition``, the only code that sets a job's status);
- ``jobs``: what people do (base models, finetunes, cancel, retry, clone);
- ``evaluations``: launching evaluate jobs;
- ``dispatch``: quotas and pauses, the JobSpec, publishing and resending;
- ``annotations``: tags and notes people put on jobs;
- ``summaries``: the indexed final metrics and hyperparameters the runs table sorts by;
- ``worker_events``: claims, heartbeats and results from workers, and the reconciler of lost attempts.
"""

from __future__ import annotations

from controlplane.training.services.annotations import job_annotate, jobs_tag
from controlplane.training.services.dispatch import (
    PAUSED_REASON,
    job_dispatch,
    job_insert,
    job_spec_build,
    jobs_redispatch_unclaimed,
    jobs_schedule,
    project_dispatch_pause,
)
from controlplane.training.services.evaluations import evaluate_job_create
from controlplane.training.services.jobs import (
    base_model_create,
    job_cancel,
    job_clone,
    job_create,
    job_retry,
)
from controlplane.training.services.transitions import TRANSITIONS, job_transition
from controlplane.training.services.worker_events import (
    job_claim,
    job_finish,
    job_heartbeat,
    jobs_recover_lost,
    worker_heartbeat_record,
)

__all__ = [
    "PAUSED_REASON",
    "TRANSITIONS",
    "base_model_create",
    "job_annotate",
    "evaluate_job_create",
    "job_cancel",
    "job_claim",
    "job_clone",
    "job_create",
    "job_dispatch",
    "job_finish",
    "job_heartbeat",
    "job_insert",
    "job_retry",
    "job_spec_build",
    "job_transition",
    "jobs_recover_lost",
    "jobs_redispatch_unclaimed",
    "jobs_schedule",
    "jobs_tag",
    "project_dispatch_pause",
    "worker_heartbeat_record",
]
