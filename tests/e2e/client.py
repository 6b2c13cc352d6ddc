"""Driving the live control plane's REST API as a pipeline would: a token, a client, launch and wait."""

from __future__ import annotations

import time

import httpx

from tests.conftest import PASSWORD

FAST_LORA = {
    "method": {"name": "lora", "r": 8, "alpha": 16},
    "hyperparameters": {
        "max_steps": 24,
        "batch_size": 8,
        "learning_rate": 0.005,
        "max_seq_length": 64,
    },
}


def api(live_server, username: str) -> httpx.Client:
    token = httpx.post(
        f"{live_server.url}/api/v1/auth/token", data={"username": username, "password": PASSWORD}
    ).json()["token"]
    return httpx.Client(
        base_url=f"{live_server.url}/api/v1/",
        headers={"Authorization": f"Token {token}"},
        timeout=30,
    )


def wait_for(
    client: httpx.Client, job_id: int, statuses: set[str], timeout: float = 240
) -> tuple[dict, list[str]]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"jobs/{job_id}").json()
        if not seen or seen[-1] != job["status"]:
            seen.append(job["status"])
        if job["status"] in statuses:
            return job, seen
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} stayed {seen[-1]} (seen {seen})")


def submit(setup: dict, config: dict, *, base_model: int | None = None) -> int:
    """Launch a job as alice on the setup's dataset; returns its id."""
    body = {
        "project": "demo",
        "base_model": base_model or setup["base"],
        "dataset_version": setup["dataset"],
        "config": config,
    }
    response = setup["alice"].post("jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]
