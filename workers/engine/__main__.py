"""``python -m workers.engine SPEC_JSON_PATH WORKDIR``: exit status and last stderr line.

See ``workers.engine.protocol`` for what goes to stdout and what each exit code means.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from workers.engine import JobInputError
from workers.engine.job import run_job
from workers.engine.protocol import EXIT_CANCELLED, EXIT_FAILED, EXIT_INVALID_INPUT, EXIT_OK
from workers.spec import JobSpec

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

# Some exceptions carry whole server responses; the traceback printed before keeps them.
MAX_REASON_CHARS = 1000


class SpecError(JobInputError):
    """The spec file is unreadable or does not validate."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.engine")
    parser.add_argument("spec", type=Path, help="JobSpec as a JSON file")
    parser.add_argument("workdir", type=Path, help="scratch directory for downloads and outputs")
    args = parser.parse_args(argv)

    # A cancel arrives as SIGTERM; as KeyboardInterrupt it unwinds through the
    # MLflow run's context manager, which then ends the run KILLED.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    _die_with_runner()
    _quiet_progress_bars()
    try:
        spec = _load_spec(args.spec)
        args.workdir.mkdir(parents=True, exist_ok=True)
        run_job(spec, args.workdir)
    except KeyboardInterrupt:
        return _fail("cancelled", EXIT_CANCELLED)
    except JobInputError as exc:
        return _fail(str(exc), EXIT_INVALID_INPUT)
    except Exception as exc:  # the process boundary: every failure becomes a sentence
        traceback.print_exc()
        return _fail(f"{type(exc).__name__}: {exc}", EXIT_FAILED)
    return EXIT_OK


def _load_spec(path: Path) -> JobSpec:
    try:
        return JobSpec.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(f"cannot read the job spec {str(path)!r}: {exc.strerror}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'spec'}: {error['msg']}"
            for error in exc.errors()
        )
        raise SpecError(f"the job spec is invalid: {problems}") from exc


def _fail(reason: str, code: int) -> int:
    """Print the reason as the last stderr line: the runner shows it to the user as is."""
    sys.stdout.flush()
    sentence = " ".join(reason.split())[:MAX_REASON_CHARS] or "failed"
    print(f"error: {sentence}", file=sys.stderr, flush=True)
    return code


def _die_with_runner() -> None:
    """Ask Linux to SIGKILL this process when the runner that started it dies.

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
        os._exit(EXIT_FAILED)


def _quiet_progress_bars() -> None:
    # Bars redraw with carriage returns and would arrive as hundreds of log lines.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


if __name__ == "__main__":
    sys.exit(main())
