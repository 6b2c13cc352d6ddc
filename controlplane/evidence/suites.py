"""Evaluation suites: their versions, their runs as evaluate jobs, and the cache of results."""

from __future__ import annotations


def job_finished(job_id: int) -> None:
    """A job ended: if it ran a suite task, settle its suite run (idempotent; reconcilers call again)."""


def suite_comparison(*, promotion: object) -> object | None:
    """The challenger's and the champion's suite results for ``promotion``, task by task, with
    their state (pending while a run has not ended); None when the model has no suite.
    Rendered by ``evidence/_suite_results.html`` as ``suite_comparison``."""
    return None
