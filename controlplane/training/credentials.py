"""The credential a claimed attempt carries to MLflow.

A worker holds no MLflow rights of its own: the claim hands it a token naming
one job's one attempt, which the MLflow gate (controlplane.mlflow_gate) reads
on every call. The token is signed, so it cannot be forged, but the gate still
asks the database whether that attempt is the one running: a cancelled,
finished or superseded attempt's token opens nothing.
"""

from __future__ import annotations

from django.core import signing

SALT = "tuneyard.tracking-attempt"
# The database is the real fence; the age only bounds a token copied out of a log.
MAX_AGE_SECONDS = 30 * 24 * 3600
# Where the claim answer carries it (the body is the attempt's JobSpec, stored as it was sent).
HEADER = "Tuneyard-Tracking-Token"


def tracking_token_issue(*, job_id: int, attempt: int) -> str:
    return signing.dumps([job_id, attempt], salt=SALT)


def tracking_token_read(token: str) -> tuple[int, int] | None:
    """The (job id, attempt) a token names; None if it is not one of ours or too old."""
    try:
        job_id, attempt = signing.loads(token, salt=SALT, max_age=MAX_AGE_SECONDS)
    except (signing.BadSignature, ValueError, TypeError):
        return None
    if not isinstance(job_id, int) or not isinstance(attempt, int):
        return None
    return job_id, attempt
