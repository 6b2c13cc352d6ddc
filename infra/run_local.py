"""``make up``: the whole of Tuneyard on one machine, with embedded defaults.

Starts what is not given by the environment (a local Redis unless REDIS_URL,
a local MLflow server unless MLFLOW_TRACKING_URI; SQLite unless DATABASE_URL),
migrates, seeds the demo, then runs the web app, one worker (its GPUs, or the
CPU) and the control worker with the reconciler. Ctrl-C stops everything.

Ports: TUNEYARD_PORT (8000), MLFLOW_PORT (5000), TUNEYARD_REDIS_PORT (6390).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra import processes  # noqa: E402


class Supervisor:
    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, command: list[str], extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**self.env, **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.children.append((name, process))
        print(
            f"  started {name:<14} pid {process.pid}, log {self.log_dir / (name + '.log')}",
            flush=True,
        )
        return process

    def run(self, command: list[str]) -> None:
        subprocess.run(command, cwd=ROOT, env=self.env, check=True)

    def stop(self) -> None:
        for _, process in reversed(self.children):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, process in reversed(self.children):
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            print(f"  stopped {name}", flush=True)

    def watch(self) -> int:
        """Wait until a child dies (a failure: stop all) or we are told to stop."""
        while True:
            for name, process in self.children:
                if process.poll() is not None:
                    print(
                        f"{name} exited with code {process.returncode}; see {self.log_dir / (name + '.log')}",
                        flush=True,
                    )
                    return 1
            time.sleep(0.5)


def _port(variable: str, default: int) -> int:
    port = int(os.environ.get(variable, default))
    if processes.port_open(port):
        raise SystemExit(f"Port {port} is taken; set {variable} to a free port.")
    return port


def main() -> int:
    var_dir = Path(os.environ.get("TUNEYARD_VAR_DIR", ROOT / "var")).resolve()
    log_dir = var_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        TUNEYARD_VAR_DIR=str(var_dir),
        DJANGO_SETTINGS_MODULE="controlplane.settings",
        PYTHONUNBUFFERED="1",
        RAY_AUTH_MODE="disabled",
    )
    # One person on loopback: the development secrets work here, and only here. DEBUG stays
    # off (a debug page shows settings and code): `DEBUG=true make up` turns it on.
    env.setdefault("TUNEYARD_LAPTOP", "true")
    env.setdefault("CELERY_BEAT_SCHEDULE", str(var_dir / "celerybeat-schedule"))
    web_port = _port("TUNEYARD_PORT", 8000)
    supervisor = Supervisor(env, log_dir)

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    print("Starting Tuneyard", flush=True)
    try:
        if "REDIS_URL" not in env:
            port = _port("TUNEYARD_REDIS_PORT", 6390)
            (var_dir / "redis").mkdir(exist_ok=True)
            redis = supervisor.start("redis", processes.redis_command(port=port, workdir=var_dir / "redis"))
            processes.wait_for_port(port, process=redis)
            env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        if "MLFLOW_TRACKING_URI" not in env:
            port = _port("MLFLOW_PORT", 5000)
            (var_dir / "mlartifacts").mkdir(exist_ok=True)
            mlflow = supervisor.start(
                "mlflow",
                processes.mlflow_command(
                    port=port,
                    backend_store_uri=f"sqlite:///{var_dir / 'mlflow.db'}",
                    artifacts_destination=str(var_dir / "mlartifacts"),
                ),
                processes.MLFLOW_ENV,
            )
            env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{port}"
            processes.wait_for_http(f"{env['MLFLOW_TRACKING_URI']}/health", timeout=120, process=mlflow)
        env.setdefault("CONTROLPLANE_URL", f"http://127.0.0.1:{web_port}")

        python = sys.executable
        supervisor.run([python, "manage.py", "migrate", "--no-input", "-v", "0"])
        supervisor.run([python, "manage.py", "collectstatic", "--no-input", "-v", "0"])
        supervisor.run([python, "manage.py", "seed_demo"])

        web = supervisor.start("web", processes.web_command(port=web_port))
        gpus = processes.gpu_count()
        queues = ["cpu", "gpu"] if gpus else ["cpu"]
        supervisor.start(
            "worker",
            processes.worker_command(queues=queues, name=f"worker-{socket.gethostname()}"),
            # The worker reaches MLflow through the gate, as everyone but the control plane does.
            {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{web_port}/mlflow"},
        )
        supervisor.start("control", processes.control_worker_command())
        processes.wait_for_http(f"http://127.0.0.1:{web_port}/login/", timeout=60, process=web)

        print(
            f"\nTuneyard is up: http://127.0.0.1:{web_port}/\n"
            f"  log in as alice, bob (members) or carol (approver), password 'tuneyard-demo';"
            f" admin / 'tuneyard-admin'\n"
            f"  MLflow: http://127.0.0.1:{web_port}/mlflow/   worker queues: {', '.join(queues)}"
            f" ({gpus} GPU(s))\n  Press Ctrl-C to stop.\n",
            flush=True,
        )
        return supervisor.watch()
    except KeyboardInterrupt:
        print("\nStopping Tuneyard", flush=True)
        return 0
    except (subprocess.CalledProcessError, RuntimeError, TimeoutError) as exc:
        print(f"Tuneyard could not start: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        supervisor.stop()
        print("Stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
