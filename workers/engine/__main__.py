"""``python -m workers.engine SPEC_JSON_PATH WORKDIR``: exit status and last stderr line.

See ``workers.engine.protocol`` for what goes to stdout and what each exit code means.
"""

from __future__ import annotations

from workers.engine.lifeline import die_with_runner

# First of all, before the seconds the imports below take: a trainer whose
# worker is killed meanwhile must not live on to train.
if __name__ == "__main__":
    die_with_runner()

import argparse  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

from pydantic import ValidationError  # noqa: E402

from workers.engine import JobInputError, distributed  # noqa: E402
from workers.engine.protocol import EXIT_CANCELLED, EXIT_FAILED, EXIT_INVALID_INPUT, EXIT_OK  # noqa: E402
from workers.spec import JobKind, JobSpec  # noqa: E402
from workers.uris import UriRefused  # noqa: E402

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
    _quiet_progress_bars()
    library_warnings_once()
    rank_process = distributed.is_rank_process()
    if rank_process and not distributed.is_main():
        distributed.stdout_silence()
    try:
        spec = _load_spec(args.spec)
        args.workdir.mkdir(parents=True, exist_ok=True)
        if spec.kind is JobKind.SWEEP_DRIVER:
            # Imported only for a driver: Ray takes seconds to load and a finetune never needs it.
            from workers.engine.sweep import run_sweep

            run_sweep(spec, args.workdir)
        elif spec.kind is JobKind.EVALUATE and spec.judge is not None:
            from workers.engine.job import run_judge

            run_judge(spec, args.workdir)
        elif spec.kind is JobKind.EVALUATE:
            # One process: an evaluation scores on the first of its GPUs.
            from workers.engine.job import run_evaluate

            run_evaluate(spec, args.workdir)
        elif spec.config.resources.launched and not rank_process:
            failure = distributed.launch(args.spec, args.workdir, spec.config.resources)
            if failure is not None:
                return _fail(failure.reason, failure.code)
        else:
            # Imported here: MLflow takes seconds to import, and torchrun's agent never needs it.
            from workers.engine.job import run_job

            run_job(spec, args.workdir)
    except KeyboardInterrupt:
        return _rank_fail(args.workdir, "cancelled", EXIT_CANCELLED, rank_process)
    except (JobInputError, UriRefused) as exc:  # a URI the rule refuses is refused on every retry too
        return _rank_fail(args.workdir, str(exc), EXIT_INVALID_INPUT, rank_process)
    except Exception as exc:  # the process boundary: every failure becomes a sentence
        traceback.print_exc()
        return _rank_fail(args.workdir, f"{type(exc).__name__}: {exc}", EXIT_FAILED, rank_process)
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


def _rank_fail(workdir: Path, reason: str, code: int, rank_process: bool) -> int:
    """``_fail``, and under torchrun also a record of it for the agent, which reports the job's end."""
    if rank_process:
        distributed.failure_record(workdir, distributed.Failure(code, _sentence(reason)))
    return _fail(reason, code)


def _sentence(reason: str) -> str:
    return " ".join(reason.split())[:MAX_REASON_CHARS] or "failed"


def _fail(reason: str, code: int) -> int:
    """Print the reason as the last stderr line: the runner shows it to the user as is."""
    sys.stdout.flush()
    print(f"error: {_sentence(reason)}", file=sys.stderr, flush=True)
    return code


def _quiet_progress_bars() -> None:
    # Bars redraw with carriage returns and would arrive as hundreds of log lines.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def library_warnings_once() -> None:
    """Each distinct warning once, on one line of its own: libraries repeat theirs at every call
    (every step, every layer), which would bury the job's own output in its log."""
    seen: set[tuple[type[Warning], str]] = set()

    def show(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
        key = (category, str(message))
        if key not in seen:
            seen.add(key)
            # On stdout, as log text: stderr's last line is kept for the sentence of a failure.
            print(f"warning: {category.__name__}: {message}", flush=True)

    warnings.simplefilter("default")
    warnings.showwarning = show


if __name__ == "__main__":
    sys.exit(main())
