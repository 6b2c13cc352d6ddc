"""Fault injection: jobs under fire must all end, none lost, no attempt overlapping another.

Starts everything for itself on this machine: a fresh PostgreSQL database, an
MLflow server, a Redis server on its own port (so it may kill it), the web
process (gunicorn), the control worker with its reconcilers, and two GPU-less
workers. Then it submits jobs through the REST API while it

* kills a worker running a job with SIGKILL (and restarts it, as a supervisor would),
* kills the Redis server with SIGKILL and starts an empty one on the same port,
* kills the web process between a job's commit and its publish (a fault
  point, see ``controlplane.faults``),

and checks, from the database and from a ledger of the trainer processes it
sees in /proc every 0.1 s:

* every job reaches a terminal state (none lost);
* no two trainer processes of one job are ever alive at once (no overlap), and
  no attempt runs in two processes (nothing runs twice);
* every attempt that resumed started at the step after the checkpoint it was given.

``--visibility-timeout S`` makes Redis redeliver unacknowledged messages after
S seconds, shorter than the jobs: the redelivered copies must be refused.

Run from the repository root (prints a JSON report; exit 1 if a check fails):
    .venv/bin/python bench/fault_injection.py --jobs 100 --worker-kills 10 --redis-restarts 2 --web-kills 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.seed import database_create, project_seed  # noqa: E402
from infra import processes  # noqa: E402

QUEUE = "faults"
WORKERS = ("w1", "w2")


class Stack:
    """The processes under test, each restartable by name."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env = tmp, env
        self.procs: dict[str, subprocess.Popen] = {}
        self.commands: dict[str, tuple[list[str], dict[str, str]]] = {}

    def start(self, name: str, command: list[str] | None = None, extra: dict[str, str] | None = None) -> None:
        if command is not None:
            self.commands[name] = (command, extra or {})
        command, extra = self.commands[name]
        log = (self.tmp / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            command, cwd=ROOT, env={**self.env, **extra}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def kill(self, name: str, *, group: bool = False) -> None:
        """SIGKILL the process itself, so what dies with it must do so on its own; or, with
        ``group``, all of it at once (gunicorn's workers too), as when its machine goes."""
        proc = self.procs[name]
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")


class TrainerLedger(threading.Thread):
    """Every trainer process seen in /proc: its job and attempt, and when it was alive.

    Two trainer processes of one job seen in the same sample is an overlap.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        # (pid, spec path) -> {job, attempt, first, last}; the path tells a reused pid apart
        self.seen: dict[tuple[int, str], dict] = {}
        self.overlaps: list[tuple[int, list[int]]] = []
        self.stop = threading.Event()

    def job_of(self, pid: int) -> int | None:
        return next((entry["job"] for (p, _), entry in list(self.seen.items()) if p == pid), None)

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.monotonic()
            alive: dict[int, list[int]] = defaultdict(list)
            for group, spec_path in _trainer_processes():
                entry = self.seen.get((group, spec_path))
                if entry is None:
                    try:
                        spec = json.loads(Path(spec_path).read_text())
                    except (OSError, ValueError):
                        continue  # its folder is already gone: it is ending
                    entry = {"job": spec["job_id"], "attempt": spec["attempt"], "first": now}
                    self.seen[(group, spec_path)] = entry
                entry["last"] = now
                alive[entry["job"]].append(group)
            self.overlaps.extend((job, pids) for job, pids in alive.items() if len(pids) > 1)
            time.sleep(0.1)


def _trainer_processes() -> list[tuple[int, str]]:
    """(process group, spec path) of each live trainer, ``python -m workers.engine SPEC WORKDIR``.

    The runner starts each trainer as the leader of its own process group, so
    the group is the trainer: a process the trainer forks carries its command
    line until it execs something else, and stays in its group even once the
    trainer is gone, so it is never counted as another attempt. A zombie has
    no command line, so it is not counted.
    """
    found: set[tuple[int, str]] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            # The process group is the 5th field of /proc/PID/stat, after the ")" closing the name.
            group = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2])
        except (OSError, ValueError, IndexError):
            continue
        if len(argv) >= 4 and argv[1:3] == ["-m", "workers.engine"]:
            found.add((group, argv[3]))
    return sorted(found)


def _alive_trainer(group: int) -> bool:
    return any(g == group for g, _ in _trainer_processes())


def main(argv: list[str] | None = None) -> int:  # noqa: C901 - one scenario, top to bottom
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--worker-kills", type=int, default=10)
    parser.add_argument("--redis-restarts", type=int, default=2)
    parser.add_argument("--web-kills", type=int, default=2)
    parser.add_argument("--steps", type=int, default=16, help="training steps per job")
    parser.add_argument("--checkpoint-every", type=int, default=4)
    parser.add_argument("--visibility-timeout", type=int, default=None)
    parser.add_argument("--sweep-trials", type=int, default=0, help="also run a sweep of this many trials")
    parser.add_argument(
        "--control-restarts", type=int, default=0, help="kill the web process and the control worker together"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deadline", type=float, default=3600, help="seconds for every job to end")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("FAULTS_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tuneyard_faults"),
    )
    parser.add_argument("--report", type=Path, default=None, help="also write the JSON report here")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    # Stopped from outside (a timeout): still take the whole stack down on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))

    tmp = Path(tempfile.mkdtemp(prefix="tuneyard-faults-"))
    (tmp / "faults").mkdir()
    redis_port, web_port, mlflow_port = processes.free_port(), processes.free_port(), processes.free_port()
    broker = f"redis://127.0.0.1:{redis_port}/0"
    web_url, mlflow_url = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{mlflow_port}"
    env = dict(
        os.environ,
        DATABASE_URL=args.database_url,
        TUNEYARD_VAR_DIR=str(tmp),
        # The tiny base model is a folder in tmp: the one root models may load from here.
        MODEL_URI_ROOTS=str(tmp),
        DEBUG="true",
        # All on loopback: the development secrets are taken, as on a laptop.
        TUNEYARD_LAPTOP="true",
        CELERY_BROKER_URL=broker,
        REDIS_URL=broker,
        MLFLOW_TRACKING_URI=mlflow_url,
        CONTROLPLANE_URL=web_url,
        DJANGO_SETTINGS_MODULE="controlplane.settings",
        PYTHONUNBUFFERED="1",
        # Every process runs this checkout's code, the trainers too (they start in a temporary folder).
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
        # Fast reconcilers, so that recovery takes seconds, not the production minutes.
        JOB_RECONCILE_SECONDS="2",
        JOB_HEARTBEAT_TIMEOUT_SECONDS="8",
        JOB_PUBLISH_GRACE_SECONDS="5",
        JOB_UNCLAIMED_SECONDS="10",
        JOB_MAX_ATTEMPTS="6",
        CELERY_BEAT_SCHEDULE=str(tmp / "beat"),
        TUNEYARD_PRESENCE_SECONDS="2",
    )
    os.environ.update(env)
    stack = Stack(tmp, env)
    ledger = TrainerLedger()
    report: dict = {"jobs": args.jobs, "log_dir": str(tmp)}
    try:
        database_create(args.database_url)
        (tmp / "redis").mkdir()
        stack.start("redis", processes.redis_command(port=redis_port, workdir=tmp / "redis"))
        (tmp / "mlartifacts").mkdir()
        stack.start(
            "mlflow",
            processes.mlflow_command(
                port=mlflow_port,
                backend_store_uri=f"sqlite:///{tmp / 'mlflow.db'}",
                artifacts_destination=str(tmp / "mlartifacts"),
            ),
            processes.MLFLOW_ENV,
        )
        seeded = project_seed(tmp, slug="faults", rows=32)
        project, token, base, version = seeded["project"], seeded["token"], seeded["base"], seeded["version"]
        from django.utils import timezone

        from controlplane.sweeps.models import Sweep
        from controlplane.training.models import Job, JobEvent, JobMetricPoint, JobStatus

        stack.start("web", processes.web_command(port=web_port), {"TUNEYARD_FAULT_DIR": str(tmp / "faults")})
        stack.start("control", processes.control_worker_command())
        worker_env = {}
        if args.visibility_timeout:
            worker_env = {
                "TUNEYARD_VISIBILITY_TIMEOUT": str(args.visibility_timeout),
                "TUNEYARD_BROKER_TRANSPORT_OPTIONS": json.dumps(
                    {"unacked_restore_interval": 1, "unacked_restore_throttle": 1}
                ),
            }
        for name in WORKERS:
            stack.start(
                name,
                processes.worker_command(queues=[QUEUE], name=f"{name}@%h"),
                {"TUNEYARD_WORKER_NAME": name, **worker_env},
            )
        processes.wait_for_http(f"{mlflow_url}/health", timeout=120, process=stack.procs["mlflow"])
        processes.wait_for_http(f"{web_url}/login/", timeout=60, process=stack.procs["web"])
        ledger.start()

        # --- submit, killing the web process between commit and publish ---------
        api = httpx.Client(
            base_url=f"{web_url}/api/v1/", headers={"Authorization": f"Token {token}"}, timeout=30
        )
        config = {
            "method": {"name": "lora"},
            "hyperparameters": {
                "max_steps": args.steps, "batch_size": 4, "max_seq_length": 64,
                "checkpoint_every_steps": args.checkpoint_every, "learning_rate": 1e-3,
            },
            "resources": {"queue": QUEUE},
        }  # fmt: skip
        web_kill_at = set(rng.sample(range(args.jobs), args.web_kills))
        submit_errors = 0
        for index in range(args.jobs):
            if index in web_kill_at:
                (tmp / "faults" / "dispatch.before_publish").touch()
            body = {"project": "faults", "base_model": base.pk, "dataset_version": version.pk,
                    "config": config, "name": f"fault-{index}"}  # fmt: skip
            try:
                api.post("jobs", json=body).raise_for_status()
            except httpx.HTTPError:
                submit_errors += 1  # the web process died under the request; was the job committed?
        submitted = Job.objects.filter(project=project, trial__isnull=True).count()
        sweep_id = None
        if args.sweep_trials:
            sweep_body = {
                "project": "faults", "name": "under fire", "base_model": base.pk,
                "dataset_version": version.pk, "config": config, "n_trials": args.sweep_trials,
                "parallelism": 2, "pruner": "none", "sampler": "random", "seed": args.seed,
                "search_space": {
                    "hyperparameters.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}
                },
            }  # fmt: skip
            sweep_id = api.post("sweeps", json=sweep_body).raise_for_status().json()["id"]
        report["submit"] = {"requests_cut_by_web_kills": submit_errors, "jobs_committed": submitted}

        # --- faults while the jobs run -----------------------------------------
        faults = ["worker"] * args.worker_kills + ["redis"] * args.redis_restarts
        faults += ["control"] * args.control_restarts
        rng.shuffle(faults)
        done_faults: dict[str, int] = defaultdict(int)
        killed_with_checkpoint = 0
        orphans: list[int] = []
        deadline = time.monotonic() + args.deadline
        next_fault = time.monotonic() + rng.uniform(3, 8)
        patience_until = next_fault + 20
        terminal = [s.value for s in JobStatus if JobStatus(s).is_finished()]

        def _fire(fault: str) -> bool:
            """Inject ``fault`` now; False to try again on the next tick."""
            nonlocal killed_with_checkpoint
            if fault == "redis":
                stack.kill("redis")
                time.sleep(1.0)
                stack.start("redis")  # empty: it keeps nothing on disk
                done_faults["redis_restarts"] += 1
                return True
            if fault == "control":
                # The whole control plane at once: the web process and the reconcilers.
                stack.kill("web", group=True)
                stack.kill("control", group=True)
                time.sleep(3.0)
                stack.start("web")
                stack.start("control")
                done_faults["control_restarts"] += 1
                return True
            # Only jobs heard from in the last seconds: a job still marked running on a worker
            # name killed a moment ago is not running in the process that now has that name.
            fresh = timezone.now() - timedelta(seconds=3)
            running = list(
                Job.objects.filter(
                    project=project, status=JobStatus.RUNNING, worker__in=WORKERS, heartbeat_at__gte=fresh
                )
                .order_by("-checkpoint_step")
                .values_list("worker", "checkpoint_step", "pk")
            )
            # Mostly wait (up to 20 s) for a victim with a checkpoint, so that resuming is put to the test.
            if not running or (running[0][1] == 0 and time.monotonic() < patience_until):
                return False
            worker, checkpoint, job_id = running[0]
            trainers = [group for group, _ in _trainer_processes() if ledger.job_of(group) == job_id]
            stack.kill(worker)
            killed_with_checkpoint += checkpoint > 0
            time.sleep(1.0)
            # Its trainer must die with it (PR_SET_PDEATHSIG), not train on unsupervised.
            orphans.extend(pid for pid in trainers if _alive_trainer(pid))
            stack.start(worker)
            done_faults["worker_kills"] += 1
            return True

        while time.monotonic() < deadline:
            open_jobs = Job.objects.filter(project=project).exclude(status__in=terminal).count()
            sweep_open = sweep_id is not None and Sweep.objects.get(pk=sweep_id).status == "running"
            if open_jobs == 0 and not sweep_open:
                break
            if faults and time.monotonic() >= next_fault and _fire(faults[0]):
                faults.pop(0)
                next_fault = time.monotonic() + rng.uniform(4, 12)
                patience_until = next_fault + (20 if rng.random() < 0.8 else 0)
            time.sleep(0.5)
        ledger.stop.set()
        ledger.join()
        report["faults"] = dict(done_faults) | {
            # A trigger file still there was never reached.
            "web_kills": args.web_kills - len(list((tmp / "faults").iterdir())),
            "worker_kills_with_a_checkpoint_to_resume": killed_with_checkpoint,
        }

        # --- checks ----------------------------------------------------------------
        jobs = list(Job.objects.filter(project=project))
        statuses: dict[str, int] = defaultdict(int)
        for job in jobs:
            statuses[job.status] += 1
        attempts: dict[int, int] = defaultdict(int)
        for job in jobs:
            attempts[job.attempt] += 1
        per_attempt: dict[tuple[int, int], int] = defaultdict(int)
        for entry in ledger.seen.values():
            per_attempt[(entry["job"], entry["attempt"])] += 1
        resumed, resumed_wrong = 0, []
        for event in JobEvent.objects.filter(job__project=project, message__startswith="resumes from"):
            step = int(event.message.rsplit(" ", 1)[1])
            first = (
                JobMetricPoint.objects.filter(job_id=event.job_id, attempt=event.attempt)
                .order_by("step")
                .values_list("step", flat=True)
                .first()
            )
            resumed += 1
            if first is not None and first != step + 1:
                resumed_wrong.append({"job": event.job_id, "attempt": event.attempt, "checkpoint": step,
                                      "first_step": first})  # fmt: skip
        refused = sum(stack.log(name).count("not claimed") for name in WORKERS)
        report |= {
            "statuses": dict(statuses),
            "attempts_per_job": {str(k): v for k, v in sorted(attempts.items())},
            "trainer_processes": len(ledger.seen),
            "resumed_attempts": resumed,
            "duplicate_messages_refused_at_claim": refused,
        }
        checks = {
            "every_job_committed": submitted == args.jobs,
            "every_job_terminal": sum(statuses[s] for s in terminal) == len(jobs),
            "no_job_failed_as_lost": not [j for j in jobs if j.error.startswith("lost:")],
            "no_trainer_outlived_its_killed_worker": not orphans,
            "no_overlapping_attempts": not ledger.overlaps,
            "no_attempt_ran_twice": all(n == 1 for n in per_attempt.values()),
            "resumed_at_the_step_after_its_checkpoint": not resumed_wrong,
            "every_attempt_killed_after_a_checkpoint_resumed": resumed >= killed_with_checkpoint,
        }
        if sweep_id is not None:
            sweep = Sweep.objects.get(pk=sweep_id)
            states = list(sweep.trials.values_list("state", flat=True))
            report["sweep"] = {"status": sweep.status, "trials": len(states), "states": sorted(set(states))}
            checks["sweep_finished_every_trial"] = (
                sweep.status == "finished" and len(states) == args.sweep_trials and "running" not in states
            )
        if args.visibility_timeout:
            one_run_each = all(job.attempt == 1 for job in jobs) and len(per_attempt) == len(jobs)
            checks["no_job_ran_twice"] = one_run_each
        report["checks"] = checks
        report["problems"] = {
            "overlaps": sorted({(job, tuple(pids)) for job, pids in ledger.overlaps})[:10],
            "overlapping_processes": [
                {"pid": pid, **entry}
                for (pid, _), entry in ledger.seen.items()
                if any(pid in pids for _, pids in ledger.overlaps)
            ][:10],
            "attempts_run_twice": [k for k, n in per_attempt.items() if n > 1][:10],
            "resumed_wrong": resumed_wrong[:10],
            "not_terminal": [j.pk for j in jobs if j.status not in terminal][:10],
            "orphaned_trainers": orphans[:10],
        }
    finally:
        ledger.stop.set()
        stack.stop_all()
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.report:
        args.report.write_text(text)
    return 0 if report.get("checks") and all(report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
