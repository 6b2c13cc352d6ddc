"""Runs one job attempt on this host: claim it, train in a subprocess, report back.

Training runs in its own process group, so a crash cannot take the worker
down and a cancel kills the trainer with all its children. This process never
imports torch (forking after torch initialises OpenMP deadlocks children).
"""

from __future__ import annotations

import logging
import math
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypedDict

import httpx
from mlflow.exceptions import MlflowException

from workers import presence, tracking
from workers.controlplane_client import ClaimRefused, ControlPlaneClient
from workers.engine.protocol import EXIT_INVALID_INPUT, parse
from workers.gpus import GpuPool, gpu_inventory, visible_devices
from workers.spec import (
    LOG_LINE_MAX_CHARS,
    Checkpoint,
    Heartbeat,
    HeartbeatReply,
    JobOutcome,
    JobResult,
    JobSpec,
)

log = logging.getLogger(__name__)

KILL_GRACE_SECONDS = 10.0


_pool_lock = threading.Lock()
_pool: GpuPool | None = None
# How long a job waits here for GPUs before going back to the queue for another host.
GPU_WAIT_SECONDS = 5.0


class NoFreeGpu(Exception):
    """This worker's GPUs are busy: the message should go back to the queue."""


def gpu_pool() -> GpuPool:
    """This worker process's GPUs, shared by the jobs it runs at once (one per pool thread)."""
    global _pool
    with _pool_lock:  # two job threads starting together must not build two pools
        if _pool is None:
            _pool = GpuPool([gpu.index for gpu in gpu_inventory()])
        return _pool


def gpu_pool_reset() -> None:
    """Forget the pool, so the next job reads the GPUs again (tests change them)."""
    global _pool
    with _pool_lock:
        _pool = None


@dataclass
class _Progress:
    """What the trainer has said so far, and what is not yet sent to the control plane."""

    run_id: str | None = None
    gpu_indices: list[int] = field(default_factory=list)
    step: int = 0
    total_steps: int = 0
    result: dict | None = None
    checkpoint: Checkpoint | None = None  # the newest one not yet sent
    pending_metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    pending_logs: list[str] = field(default_factory=list)
    # Every log line of the attempt, kept as a file and stored with the run at the end.
    log_file: IO[str] | None = None
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    timed_out: bool = False

    def take(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "run":
            self.run_id = event["mlflow_run_id"]
        elif kind == "progress":
            self.step = int(event["step"])
            self.total_steps = int(event.get("total_steps") or self.total_steps)
            for name, value in _finite(event.get("metrics"), self).items():
                self.pending_metrics.setdefault(name, []).append((self.step, value))
        elif kind == "checkpoint":
            self.checkpoint = Checkpoint(step=int(event["step"]), uri=str(event["uri"]))
            self.log_line(f"tuneyard: checkpoint at step {self.checkpoint.step} stored")
        elif kind == "result":
            self.result = event | {"metrics": _finite(event.get("metrics"), self)}

    def log_line(self, line: str, *, from_stderr: bool = False) -> None:
        # What the control plane stores must fit its columns: no NUL, bounded length.
        line = line.replace("\x00", "")[:LOG_LINE_MAX_CHARS]
        self.pending_logs.append(line)
        if self.log_file is not None:
            self.log_file.write(line + "\n")
        if from_stderr:
            self.stderr_tail.append(line)

    def heartbeat(self, spec: JobSpec, worker: str) -> Heartbeat:
        progress = min(self.step / self.total_steps, 1.0) if self.total_steps else 0.0
        return Heartbeat(
            attempt=spec.attempt,
            worker=worker,
            progress=progress,
            step=self.step,
            total_steps=self.total_steps,
            metrics=self.pending_metrics,
            mlflow_run_id=self.run_id,
            gpu_indices=self.gpu_indices,
            log_lines=self.pending_logs[-1000:],
            checkpoint=self.checkpoint,
        )

    def sent(self) -> None:
        self.pending_metrics = {}
        self.pending_logs = []
        self.checkpoint = None


def _finite(metrics: dict | None, progress: _Progress) -> dict[str, float]:
    """The metrics that are numbers; a NaN or infinite loss is reported as a log line instead."""
    kept = {}
    for name, value in (metrics or {}).items():
        number = float(value)
        if math.isfinite(number):
            kept[str(name)] = number
        else:
            progress.log_line(
                f"tuneyard: {name} is {number} at step {progress.step}; not recorded as a metric"
            )
    return kept


def _pump(stream: IO[str], source: str, lines: queue.Queue[tuple[str, str]]) -> None:
    try:
        for line in stream:
            lines.put((source, line.rstrip("\n")))
    except (OSError, ValueError) as exc:  # a closed pipe; never let the pipe fill unread
        lines.put(("err", f"tuneyard: reading the trainer's {source} failed: {exc}"))


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the trainer's whole process group, then SIGKILL whatever outlives the grace."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=KILL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def _trainer_command(spec_path: Path, workdir: Path) -> list[str]:
    return [sys.executable, "-m", "workers.engine", str(spec_path), str(workdir)]


def job_run(
    spec: JobSpec,
    *,
    client: ControlPlaneClient,
    worker: str,
    heartbeat_seconds: float = 1.0,
) -> JobOutcome | None:
    """Run one attempt to its end; None when the control plane refused the claim.

    The attempt's GPUs are taken from the worker's pool before the claim, so a
    job waiting for a GPU still shows as queued, not running; if they stay busy
    for GPU_WAIT_SECONDS, NoFreeGpu sends the job back for another host.
    """
    pool = gpu_pool()
    needed = spec.config.resources.gpus
    try:
        held = pool.acquire(needed, timeout=GPU_WAIT_SECONDS)
    except ValueError as exc:
        # This worker can never run it; claim it only to fail it with the reason.
        try:
            spec = client.claim(job_id=spec.job_id, attempt=spec.attempt, worker=worker).spec
        except ClaimRefused:
            return None
        result = JobResult(attempt=spec.attempt, worker=worker, outcome=JobOutcome.FAILED, error=str(exc))
        client.finish(job_id=spec.job_id, result=result)
        return JobOutcome.FAILED
    if held is None:
        raise NoFreeGpu(f"job {spec.job_id} needs {needed} GPU(s); none free here")
    try:
        return _claimed_run(spec, client, worker, held, heartbeat_seconds)
    finally:
        pool.release(held)


def _claimed_run(
    spec: JobSpec, client: ControlPlaneClient, worker: str, held: list[int], heartbeat_seconds: float
) -> JobOutcome | None:
    try:
        claim = client.claim(job_id=spec.job_id, attempt=spec.attempt, worker=worker)
    except ClaimRefused as exc:
        log.info("job %s attempt %s not claimed: %s", spec.job_id, spec.attempt, exc)
        return None
    spec = claim.spec
    presence.running_job_ids.add(spec.job_id)
    try:
        return _attempt_run(spec, client, worker, held, heartbeat_seconds, claim.tracking_token)
    finally:
        presence.running_job_ids.discard(spec.job_id)


def _attempt_run(
    spec: JobSpec,
    client: ControlPlaneClient,
    worker: str,
    held: list[int],
    heartbeat_seconds: float,
    tracking_token: str,
) -> JobOutcome:
    devices = visible_devices(held)
    progress = _Progress(gpu_indices=held)
    with tempfile.TemporaryDirectory(prefix=f"tuneyard-job-{spec.job_id}-") as tmp:
        workdir = Path(tmp)
        log_path = workdir / f"attempt-{spec.attempt}.log"
        progress.log_file = log_path.open("w", encoding="utf-8")
        try:
            returncode, stop_reason = _supervise(
                spec, client, worker, workdir, devices, progress, heartbeat_seconds, tracking_token
            )
        except Exception as exc:  # the supervisor itself broke: the job must still end, with the reason
            log.exception("supervising job %s failed", spec.job_id)
            returncode, stop_reason = None, ""
            progress.log_line(f"tuneyard: the worker's supervisor failed: {exc}", from_stderr=True)
        progress.log_file.close()
        log_uri = _log_store(progress.run_id, log_path, tracking_token)
        result = _result(spec, worker, returncode, progress, stop_reason, log_uri)
    if not client.finish(job_id=spec.job_id, result=result):
        log.warning("job %s attempt %s: the control plane refused the result", spec.job_id, spec.attempt)
    return result.outcome


def _supervise(
    spec: JobSpec,
    client: ControlPlaneClient,
    worker: str,
    workdir: Path,
    devices: str,
    progress: _Progress,
    heartbeat_seconds: float,
    tracking_token: str,
) -> tuple[int | None, str]:
    """Run the trainer to its end or its stop; returns (exit code, stop reason).

    Whatever happens here, the trainer's process group does not outlive it.
    """
    spec_path = workdir / "spec.json"
    spec_path.write_text(spec.model_dump_json())
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    # Whole GPUs: the job sees exactly its devices ("" hides every GPU from a CPU job).
    env["CUDA_VISIBLE_DEVICES"] = devices
    # The trainer kills itself when the thread that starts it here ends, as it
    # does when this process dies (see workers.engine.lifeline): a SIGKILLed
    # worker never leaves an attempt training on unsupervised.
    env["TUNEYARD_RUNNER_PID"] = str(os.getpid())
    # MLflow's client sends it as a bearer token: the trainer writes its own runs, nothing else.
    env[tracking.TOKEN_VARIABLE] = tracking_token
    proc = subprocess.Popen(
        _trainer_command(spec_path, workdir / "work"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        encoding="utf-8",
        errors="replace",  # a stray byte from a C library must not stop the log readers
        env=env,
        cwd=workdir,  # whatever the trainer writes by accident stays in the job's folder
        start_new_session=True,  # its own process group, killed as a whole
    )
    lines: queue.Queue[tuple[str, str]] = queue.Queue()
    readers = [
        threading.Thread(target=_pump, args=(proc.stdout, "out", lines), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, "err", lines), daemon=True),
    ]
    for reader in readers:
        reader.start()
    timeout = spec.config.resources.timeout_seconds
    deadline = time.monotonic() + timeout if timeout else math.inf
    try:
        stop_reason = ""
        next_beat = time.monotonic()
        while True:
            finished = proc.poll() is not None
            _drain(lines, progress)
            if not finished and time.monotonic() >= deadline:
                _kill_group(proc)
                progress.timed_out = True
                progress.log_line(f"tuneyard: {_timeout_reason(timeout)}", from_stderr=True)
                finished = True
            if finished or time.monotonic() >= next_beat:
                reply = _send_heartbeat(client, spec, worker, progress)
                next_beat = time.monotonic() + heartbeat_seconds
                if reply is not None and reply.stop and not finished:
                    stop_reason = reply.reason or "stopped by the control plane"
                    _kill_group(proc)
                    finished = True
            if finished:
                for reader in readers:
                    reader.join(timeout=5)
                _drain(lines, progress)
                _send_heartbeat(client, spec, worker, progress)
                return proc.returncode, stop_reason
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            _kill_group(proc)


def _drain(lines: queue.Queue[tuple[str, str]], progress: _Progress) -> None:
    while True:
        try:
            source, line = lines.get_nowait()
        except queue.Empty:
            return
        if not line:
            continue
        event = parse(line) if source == "out" else None
        if event is not None:
            progress.take(event)
        else:
            progress.log_line(line, from_stderr=source == "err")


def _send_heartbeat(
    client: ControlPlaneClient, spec: JobSpec, worker: str, progress: _Progress
) -> HeartbeatReply | None:
    """Send what is pending; kept for the next beat if the control plane could not take it now."""
    try:
        reply = client.heartbeat(job_id=spec.job_id, heartbeat=progress.heartbeat(spec, worker))
    except httpx.HTTPStatusError as exc:
        status = exc.response.status_code
        if status >= 500:
            log.warning("heartbeat for job %s failed (%s); will retry", spec.job_id, status)
            return None
        # Refused as it is: the same points sent again would be refused forever.
        log.error("heartbeat for job %s refused, points dropped: %s", spec.job_id, exc.response.text[:500])
        reply = None
    except httpx.TransportError:
        log.warning("heartbeat for job %s failed; will retry", spec.job_id, exc_info=True)
        return None
    progress.sent()
    return reply


def _log_store(run_id: str | None, log_path: Path, tracking_token: str) -> str | None:
    """Keep the attempt's whole log with its MLflow run; None if there is no run or MLflow fails."""
    if run_id is None:
        return None
    try:
        with tracking.credential(tracking_token):
            return tracking.file_attach(run_id, log_path, "logs")
    except (MlflowException, OSError):
        log.warning("could not store the log of run %s", run_id, exc_info=True)
        return None


class _ResultCommon(TypedDict):
    """The fields every JobResult of one attempt shares, whatever its outcome."""

    attempt: int
    worker: str
    mlflow_run_id: str | None


def _result(
    spec: JobSpec,
    worker: str,
    returncode: int | None,
    progress: _Progress,
    stop_reason: str,
    log_uri: str | None,
) -> JobResult:
    logs = {"log": log_uri} if log_uri else {}
    common: _ResultCommon = {"attempt": spec.attempt, "worker": worker, "mlflow_run_id": progress.run_id}
    if stop_reason:
        return JobResult(outcome=JobOutcome.CANCELLED, error=stop_reason, artifacts=logs, **common)
    if returncode == 0 and progress.result is not None:
        return JobResult(
            outcome=JobOutcome.SUCCEEDED,
            metrics=progress.result.get("metrics") or {},
            artifacts=(progress.result.get("artifacts") or {}) | logs,
            **common,
        )
    if progress.timed_out:
        reason = _timeout_reason(spec.config.resources.timeout_seconds)
        return JobResult(outcome=JobOutcome.FAILED, error=reason, artifacts=logs, **common)
    tail = [line for line in progress.stderr_tail if line.strip()]
    reason = tail[-1] if tail else f"the trainer exited with code {returncode} and said nothing"
    # A bad input fails the same way every time; anything else may pass on another try.
    retryable = returncode != EXIT_INVALID_INPUT
    return JobResult(outcome=JobOutcome.FAILED, error=reason, artifacts=logs, retryable=retryable, **common)


def _timeout_reason(seconds: int | None) -> str:
    return f"timed out: the attempt ran past its limit of {seconds} s and was stopped"
