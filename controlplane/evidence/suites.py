"""Evaluation suites: their versions, their runs as evaluate jobs, and the cache of results."""

from __future__ import annotations


def job_finished(job_id: int) -> None:
    """A job ended: if it ran a suite task, settle its suite run (idempotent; reconcilers call again)."""
