"""Fault points: named places where a fault-injection run can make this process die on purpose.

Off unless ``TUNEYARD_FAULT_DIR`` names a directory. A point fires once per
trigger file: when ``<dir>/<point name>`` exists, the first process to pass
the point removes it and kills itself with SIGKILL, as a power cut or an OOM
kill would, with no chance to clean up. ``bench/fault_injection.py`` uses this
to kill the web process exactly between committing a job and publishing it,
a window too narrow to hit by killing from outside.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

DISPATCH_BEFORE_PUBLISH = "dispatch.before_publish"


def fault_point(name: str) -> None:
    directory = os.environ.get("TUNEYARD_FAULT_DIR")
    if not directory:
        return
    try:
        # Removing is the claim: of two processes at the point, only one dies.
        (Path(directory) / name).unlink()
    except FileNotFoundError:
        return
    os.kill(os.getpid(), signal.SIGKILL)
