"""A job in several training processes on one host: the torchrun launch, and each process's part.

``python -m workers.engine SPEC WORKDIR`` for a job whose resources ask for
several processes (or a sharding strategy) becomes torchrun's agent: it runs
``torch.distributed.run --standalone --nproc-per-node N -m workers.engine SPEC
WORKDIR`` in its own process, and each rank runs the engine again. The agent
stays the process the runner started, so that for the runner nothing changes:

* only rank 0 talks to the outside (events on stdout, MLflow, uploads); the
  other ranks' stdout goes to /dev/null, their stderr stays in the job's log;
* every rank dies with the agent, and the agent with the runner
  (``lifeline``): torchrun starts each rank in a session of its own, out of
  reach of a signal to the runner's process group, so a SIGKILLed agent would
  otherwise leave its ranks training;
* the agent exits with the code of the rank that failed first of its own
  accord and prints that rank's reason last, where torchrun would exit 1 with
  its own summary: a bad input stays a bad input that is not retried.

Rank 0 fetches the inputs (dataset, base model, checkpoint) once; the other
ranks wait for the list of local paths it leaves in the work directory and
read the same rows from them. All ranks share the work directory: torchrun's
``--standalone`` runs them on this host.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from workers.engine import JobInputError
from workers.engine.protocol import EXIT_CANCELLED, EXIT_FAILED
from workers.spec import Resources

INPUTS_FILE = "inputs.json"
# How often a waiting rank looks for rank 0's inputs: next to a download, nothing.
INPUTS_POLL_SECONDS = 0.2


def rank() -> int:
    """This process's rank among the job's processes (0 when it trains alone)."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Whether this process reports: the only process of a job, or rank 0 of several.

    A RANK the worker's own environment happens to carry means nothing outside torchrun.
    """
    return not is_rank_process() or rank() == 0


def is_rank_process() -> bool:
    """Whether torchrun started this process as one of a job's ranks."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "LOCAL_RANK" in os.environ


def stdout_silence() -> None:
    """Send this process's stdout, C libraries' included, to /dev/null: only rank 0 emits events."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def strategy_check(resources: Resources) -> None:
    """Refuse, before any process starts, a strategy this worker cannot run."""
    import importlib.util

    package = resources.distributed.package
    if package and importlib.util.find_spec(package) is None:
        raise JobInputError(
            f"{resources.distributed.title} was asked for, but this worker has no {package} package"
        )


@dataclass(frozen=True)
class Failure:
    """How a rank ended: its exit code and the sentence it printed last."""

    code: int
    reason: str


def failure_record(workdir: Path, failure: Failure) -> None:
    """Leave this rank's failure where the agent reads it (the agent prints the job's reason)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / f"rank-{rank()}.failure.json").write_text(json.dumps(asdict(failure)))


def launch(spec_path: Path, workdir: Path, resources: Resources) -> Failure | None:
    """Run the job's ranks under torchrun; None when all succeeded, else the failure to report."""
    strategy_check(resources)
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(
        [
            "--standalone",
            f"--nproc-per-node={resources.processes}",
            # A rank that fails fails the job: a restart would repeat the attempt
            # behind the control plane's back, which owns retries.
            "--max-restarts=0",
            "--module",
            "workers.engine",
            str(spec_path),
            str(workdir),
        ]
    )
    # The ranks are this process's children: they die with it, as it dies with the runner.
    os.environ["TUNEYARD_RUNNER_PID"] = str(os.getpid())
    try:
        run(args)
    except ChildFailedError as exc:
        return _first_failure(workdir, {int(r): f.exitcode for r, f in exc.failures.items()})
    except SignalException:
        # torchrun has already passed the signal on to every rank and waited for them.
        return Failure(EXIT_CANCELLED, "cancelled")
    return None


def _first_failure(workdir: Path, exit_codes: dict[int, int]) -> Failure:
    """The failure that ended the job: torchrun stops the other ranks once one fails, and those
    report a cancel, so the rank that failed of its own accord is the cause (the lowest such rank
    when several did)."""
    for failed_rank in sorted(exit_codes):
        record = workdir / f"rank-{failed_rank}.failure.json"
        if record.is_file():
            failure = Failure(**json.loads(record.read_text()))
            if failure.code != EXIT_CANCELLED:
                return failure
    for failed_rank, code in sorted(exit_codes.items()):
        if code not in (EXIT_CANCELLED, -signal.SIGTERM):
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            return Failure(EXIT_FAILED, f"training process {failed_rank} {how} without saying why")
    return Failure(EXIT_CANCELLED, "cancelled")


@dataclass(frozen=True)
class Inputs:
    """What rank 0 fetched, as local paths every rank can read."""

    dataset_files: list[str]
    base_model: str
    base_model_is_local: bool  # else a hub id, which from_pretrained fetches
    resume_from: str | None


def inputs_share(workdir: Path, inputs: Inputs) -> None:
    """Rank 0: tell the other ranks where the inputs are (written whole, then renamed into place)."""
    partial = workdir / f"{INPUTS_FILE}.partial"
    partial.write_text(json.dumps(asdict(inputs)))
    os.replace(partial, workdir / INPUTS_FILE)


def inputs_wait(workdir: Path) -> Inputs:
    """The other ranks: wait for rank 0's inputs. Should rank 0 fail instead, torchrun stops the
    waiting ranks, so there is no deadline here: a large base model may take long to download."""
    path = workdir / INPUTS_FILE
    while not path.is_file():
        time.sleep(INPUTS_POLL_SECONDS)
    return Inputs(**json.loads(path.read_text()))


def barrier() -> None:
    """Wait for every rank (after the Trainer set up the process group); nothing to wait for alone."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
