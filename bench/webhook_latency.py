"""Webhook delivery: from an event's commit to a receiver, through the real control worker.

Starts a fresh PostgreSQL database, a Redis server on its own port and the control worker
(Celery, with its beat), and an HTTP receiver in this process that verifies every signature with
the Standard Webhooks reference library. Then:

1. ``--events`` events, each committed in its own transaction (as a finished job's is), one every
   ``--interval`` seconds: the time from the commit to the receiver's arrival, median and p95.
2. The receiver goes down for ``--down-seconds``; ``--down-events`` events are committed meanwhile;
   it comes back: when each message arrived, and how many times (it must be once per webhook-id).

Run from the repository root (prints a JSON report; exit 1 if a message was lost or repeated):
    .venv/bin/python -m bench.webhook_latency --events 50 --down-seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.seed import database_create  # noqa: E402
from infra import processes  # noqa: E402


class Receiver:
    def __init__(self, port: int, secret: str) -> None:
        from standardwebhooks import Webhook

        self.arrivals: list[tuple[str, float]] = []
        self.bad_signatures = 0
        verifier, receiver = Webhook(secret), self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                at = time.time()
                try:
                    verifier.verify(body, dict(self.headers.items()))
                except Exception:
                    receiver.bad_signatures += 1
                receiver.arrivals.append((self.headers["webhook-id"], at))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _wait_for(count: int, receiver: Receiver, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len({i for i, _ in receiver.arrivals}) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between two events")
    parser.add_argument("--down-seconds", type=float, default=60.0)
    parser.add_argument("--down-events", type=int, default=10)
    parser.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/tuneyard_bench_webhooks"
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tuneyard-webhooks-"))
    redis_port, receiver_port = processes.free_port(), processes.free_port()
    env = dict(
        os.environ,
        DATABASE_URL=args.database_url,
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        CELERY_BROKER_URL=f"redis://127.0.0.1:{redis_port}/0",
        DJANGO_SETTINGS_MODULE="controlplane.settings",
        PYTHONPATH=str(ROOT),
        WEBHOOK_ALLOWED_NETWORKS="127.0.0.1/32",
        CELERY_BEAT_SCHEDULE=str(tmp / "beat"),
    )
    os.environ.update(env)
    database_create(args.database_url)
    (tmp / "redis").mkdir()
    procs = [
        subprocess.Popen(
            processes.redis_command(port=redis_port, workdir=tmp / "redis"),
            stdout=(tmp / "redis.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )
    ]  # fmt: skip
    report: dict = {"log_dir": str(tmp)}
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import transaction

        from controlplane.accounts.models import Role
        from controlplane.accounts.services import member_add, project_create
        from controlplane.webhooks.models import Delivery, Endpoint, EventType
        from controlplane.webhooks.services import event_emit, secret_new

        call_command("migrate", verbosity=0)
        project = project_create(slug="hooks", name="Hooks")
        admin = member_add(project=project, username="hooks-admin", role=Role.ADMIN)
        secret = secret_new()
        Endpoint.objects.create(
            project=project, url=f"http://127.0.0.1:{receiver_port}/in", secret=secret, created_by=admin
        )
        procs.append(
            subprocess.Popen(
                processes.control_worker_command(), cwd=ROOT, env=env,
                stdout=(tmp / "control.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
            )
        )  # fmt: skip
        deadline = time.monotonic() + 90
        while "ready." not in (tmp / "control.log").read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise RuntimeError("the control worker did not start; see " + str(tmp / "control.log"))
            time.sleep(0.2)

        def emit(key: str) -> tuple[str, float]:
            with transaction.atomic():
                event = event_emit(project=project, type=EventType.JOB_SUCCEEDED, key=key, data={"k": key})
            committed = time.time()
            assert event is not None
            return Delivery.objects.get(event=event).message_id, committed

        # 1. Latency from commit to arrival, receiver up.
        receiver = Receiver(receiver_port, secret)
        committed = {}
        for i in range(args.events):
            message_id, at = emit(f"up:{i}")
            committed[message_id] = at
            time.sleep(args.interval)
        _wait_for(args.events, receiver, timeout=120)
        arrived = dict(receiver.arrivals)
        latencies = sorted((arrived[m] - t) * 1000 for m, t in committed.items() if m in arrived)
        report["up"] = {
            "events": args.events,
            "delivered": len(latencies),
            "latency_ms_median": round(statistics.median(latencies), 1),
            "latency_ms_p95": round(latencies[int(0.95 * (len(latencies) - 1))], 1),
            "latency_ms_max": round(latencies[-1], 1),
        }
        counts = Counter(i for i, _ in receiver.arrivals)

        # 2. Down for a while, then back.
        receiver.stop()
        down_at = time.time()
        down = dict(emit(f"down:{i}") for i in range(args.down_events))
        time.sleep(args.down_seconds)
        back = Receiver(receiver_port, secret)
        back_at = time.time()
        _wait_for(args.down_events, back, timeout=900)
        after = dict(back.arrivals)
        waited = sorted(after[m] - down_at for m in down if m in after)
        counts.update(i for i, _ in back.arrivals)
        report["down"] = {
            "down_seconds": args.down_seconds,
            "events": args.down_events,
            "delivered": len(waited),
            "first_arrival_after_back_s": round(min(after.values()) - back_at, 1) if after else None,
            "seconds_from_event_to_arrival_median": round(statistics.median(waited), 1) if waited else None,
            "attempts_each": sorted(
                Counter(
                    Delivery.objects.filter(message_id__in=down).values_list("attempts", flat=True)
                ).items()
            ),
        }
        report["retry_schedule_s"] = list(__import__("django.conf").conf.settings.WEBHOOK_RETRY_SECONDS)
        report["messages_received_more_than_once"] = sum(1 for c in counts.values() if c > 1)
        report["bad_signatures"] = receiver.bad_signatures + back.bad_signatures
        back.stop()
    finally:
        for proc in reversed(procs):
            try:
                os.killpg(proc.pid, 15)
                proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, 9)
    print(json.dumps(report, indent=2))
    lost = report["up"]["delivered"] < args.events or report["down"]["delivered"] < args.down_events
    return 1 if lost or report["messages_received_more_than_once"] or report["bad_signatures"] else 0


if __name__ == "__main__":
    sys.exit(main())
