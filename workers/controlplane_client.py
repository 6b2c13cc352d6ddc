"""The worker's side of the internal job-events API (claim, heartbeat, finish)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import httpx

from workers.spec import (
    ClaimRequest,
    Heartbeat,
    HeartbeatReply,
    JobResult,
    JobSpec,
    SweepTrialReport,
    WorkerHeartbeat,
)

FINISH_TRIES = 30  # about five minutes with the backoff capped at 10 s


class ClaimRefused(Exception):
    """The control plane refuses this attempt to this worker (claimed, cancelled, gone)."""


class AttemptSuperseded(Exception):
    """The control plane no longer counts this attempt as running (cancelled, lost and retried)."""


# The claim's answer carries the attempt's MLflow credential in this header.
TRACKING_TOKEN_HEADER = "Tuneyard-Tracking-Token"


@dataclass(frozen=True)
class Claim:
    """A claimed attempt: its spec, and the token that lets it write its own MLflow runs, nothing else."""

    spec: JobSpec
    tracking_token: str


class ControlPlaneClient:
    def __init__(self, base_url: str, token: str, *, timeout: float = 15.0, tries: int = 5) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + "/internal/v1/",
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )
        self._tries = tries

    @classmethod
    def from_env(cls, *, tries: int = 5) -> ControlPlaneClient:
        return cls(
            os.environ.get("CONTROLPLANE_URL", "http://127.0.0.1:8000"),
            os.environ.get("WORKER_TOKEN", "dev-worker-token"),
            tries=tries,
        )

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, body: dict[str, Any], *, tries: int | None = None) -> httpx.Response:
        # Network blips and a restarting web process are transient: retry with backoff.
        # Every event is idempotent on the server, so a repeat is harmless.
        tries = tries or self._tries
        for attempt in range(tries):
            try:
                response = self._http.post(path, json=body)
            except httpx.TransportError:
                if attempt == tries - 1:
                    raise
            else:
                if response.status_code < 500 or attempt == tries - 1:
                    return response
            time.sleep(min(2**attempt * 0.5, 10))
        raise AssertionError("unreachable")

    def claim(self, *, job_id: int, attempt: int, worker: str) -> Claim:
        response = self._post(
            f"jobs/{job_id}/claim", ClaimRequest(attempt=attempt, worker=worker).model_dump()
        )
        if response.status_code in (404, 409):
            raise ClaimRefused(response.json().get("message", response.text))
        response.raise_for_status()
        return Claim(
            spec=JobSpec.model_validate(response.json()),
            tracking_token=response.headers.get(TRACKING_TOKEN_HEADER, ""),
        )

    def heartbeat(self, *, job_id: int, heartbeat: Heartbeat) -> HeartbeatReply:
        response = self._post(f"jobs/{job_id}/heartbeat", heartbeat.model_dump(mode="json"))
        response.raise_for_status()
        return HeartbeatReply.model_validate(response.json())

    def finish(self, *, job_id: int, result: JobResult) -> bool:
        """Report the end; False when the control plane refused it (the attempt was superseded)."""
        # An attempt's result is worth minutes of retrying: losing it means training again.
        response = self._post(f"jobs/{job_id}/finish", result.model_dump(mode="json"), tries=FINISH_TRIES)
        if response.status_code == 409:
            return False
        response.raise_for_status()
        return True

    def sweep_trial_report(self, *, job_id: int, report: SweepTrialReport) -> None:
        """A sweep-driver job says where one of its trials stands (the whole state, each time)."""
        response = self._post(f"jobs/{job_id}/sweep-trials", report.model_dump(mode="json"))
        if response.status_code == 409:
            raise AttemptSuperseded(response.json().get("message", response.text))
        response.raise_for_status()

    def worker_heartbeat(self, heartbeat: WorkerHeartbeat) -> None:
        self._post("workers/heartbeat", heartbeat.model_dump(mode="json")).raise_for_status()
