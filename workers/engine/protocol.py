"""How the training subprocess talks to the runner that started it.

The engine writes one JSON object per line on stdout, each line starting with
exactly ``PREFIX``; every other line on stdout or stderr is log text. Events:

* ``{"event": "run", "mlflow_run_id": str}``, once, as soon as the MLflow run exists;
* ``{"event": "progress", "step": int, "total_steps": int, "metrics": {name: float}}``
  at every logged optimizer step (``metrics`` has at least ``loss`` and
  ``learning_rate``);
* ``{"event": "checkpoint", "step": int, "uri": str}`` each time a resumable
  checkpoint has been completely stored at ``uri`` (only then, so a
  half-uploaded checkpoint is never named);
* ``{"event": "result", "metrics": {name: float}, "artifacts": {name: uri}}``,
  once, last, before a zero exit.

On failure there is no result: the process exits with one of the non-zero
codes below and the last line of stderr is one sentence saying why.

Kept free of torch and MLflow imports: the runner imports this module in the
Celery worker's parent process.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any, TextIO

PREFIX = "@@tuneyard "

EXIT_OK = 0
# Something unexpected broke (a bug, a lost tracking server, out of memory);
# retrying may help.
EXIT_FAILED = 1
# The job itself is wrong (bad dataset row, base model that cannot load, bad
# spec): retrying the same spec fails the same way.
EXIT_INVALID_INPUT = 2
# Stopped by SIGTERM or SIGINT, i.e. cancelled; the MLflow run ends KILLED.
EXIT_CANCELLED = 143

_write_lock = threading.Lock()


def emit(event: dict[str, Any], stream: TextIO | None = None) -> None:
    """Write one event line and flush, so the runner sees it while training goes on."""
    # NaN stays NaN (Python's json reads it back): a diverged loss is news to
    # report, not a reason for the reporter to crash.
    line = PREFIX + json.dumps(event, separators=(",", ":")) + "\n"
    out = stream if stream is not None else sys.stdout
    # One write per line under a lock, so a line from another thread cannot
    # land in the middle of an event.
    with _write_lock:
        out.write(line)
        out.flush()


def parse(line: str) -> dict[str, Any] | None:
    """The event on ``line``, or ``None`` when it is log text (or a garbled event line)."""
    if not line.startswith(PREFIX):
        return None
    try:
        event = json.loads(line[len(PREFIX) :])
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        return None
    return event
