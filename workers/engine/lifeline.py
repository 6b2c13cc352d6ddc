"""The trainer's tie to its runner: it dies when the runner does. Standard library only.

``workers.engine.__main__`` calls ``die_with_runner`` before anything else, so
that a worker killed while its trainer is still importing (seconds, for torch
and MLflow) leaves no trainer behind that goes on to train unsupervised.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
EXIT_RUNNER_GONE = 1


def die_with_runner() -> None:
    """Ask Linux to SIGKILL this process when the thread of the runner that started it ends.

    A worker killed with SIGKILL cannot stop its trainer; without this the
    trainer would train on, unsupervised, while the control plane hands the job
    to another worker: two attempts at once.
    """
    runner_pid = os.environ.get("TUNEYARD_RUNNER_PID")
    if runner_pid is None or not sys.platform.startswith("linux"):
        return  # run by hand, or on a system without prctl
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    # The runner may have died before the request was made: then nobody is left to signal us.
    if os.getppid() != int(runner_pid):
        os._exit(EXIT_RUNNER_GONE)
