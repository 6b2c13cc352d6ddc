"""A real sweep: trials run as jobs on the worker process, two at once, and the pruner stops some."""

from __future__ import annotations

import time

import pytest
from django.db import connection

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def optuna_storage(settings, tmp_path):
    if connection.vendor != "postgresql":
        settings.OPTUNA_STORAGE_URL = f"sqlite:///{tmp_path / 'optuna.sqlite3'}"


def test_a_sweep_runs_six_trials_two_at_a_time_and_prunes_the_hopeless(setup, optuna_storage):  # noqa: F811
    alice = setup["alice"]
    body = {
        "project": "demo",
        "name": "lr and rank",
        "base_model": setup["base"],
        "dataset_version": setup["dataset"],
        "config": {
            "hyperparameters": {
                "max_steps": 40,
                "batch_size": 8,
                "max_seq_length": 64,
                "checkpoint_every_steps": None,
            },
        },
        "search_space": {
            "hyperparameters.learning_rate": {"type": "float", "low": 1e-5, "high": 3e-2, "log": True},
            "method.r": {"type": "categorical", "choices": [4, 8]},
        },
        "objective_metric": "train_loss",
        "n_trials": 6,
        "parallelism": 2,
        "pruner": "median",
        "seed": 3,
    }
    created = alice.post("sweeps", json=body)
    assert created.status_code == 201, created.text
    sweep_id = created.json()["id"]
    deadline = time.monotonic() + 600
    while (sweep := alice.get(f"sweeps/{sweep_id}").json())["status"] == "running":
        assert time.monotonic() < deadline, sweep
        time.sleep(1)
    assert sweep["status"] == "finished", sweep["stop_reason"]
    states = [trial["state"] for trial in sweep["trials"]]
    assert len(states) == 6 and "failed" not in states, sweep["trials"]
    assert "pruned" in states, sweep["trials"]
    best = sweep["best_trial"]
    assert best["state"] == "complete" and best["value"] == min(
        t["value"] for t in sweep["trials"] if t["state"] == "complete"
    )
    # Two at a time: some trial started before another had ended.
    jobs = [alice.get(f"jobs/{trial['job']}").json() for trial in sweep["trials"]]
    spans = sorted((job["started_at"], job["finished_at"]) for job in jobs)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))
    pruned = next(job for job in jobs if job["error"].startswith("pruned"))
    assert pruned["status"] == "cancelled" and pruned["step"] < 40
