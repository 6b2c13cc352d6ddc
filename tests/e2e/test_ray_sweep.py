"""A real Ray sweep: one driver job on the worker starts a local Ray on the CPU and runs Ray Tune
(Optuna search, ASHA), every trial trained by the engine and logged as an MLflow child run of the
driver's run; the trials reach the sweep's API as they go."""

from __future__ import annotations

import time

import pytest
from django.test import Client
from mlflow import MlflowClient

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

GOOD_LR, HOPELESS_LR = 5e-3, 1e-7


def test_a_ray_sweep_runs_its_trials_in_one_driver_job_and_asha_stops_the_hopeless(
    setup,  # noqa: F811
    mlflow_server,
    people,
):
    alice = setup["alice"]
    body = {
        "project": "demo",
        "name": "ray lr",
        "backend": "ray",
        "base_model": setup["base"],
        "dataset_version": setup["dataset"],
        "config": {
            "hyperparameters": {
                "max_steps": 8,
                "batch_size": 8,
                "max_seq_length": 64,
                "checkpoint_every_steps": None,
            },
        },
        # Two learning rates: one that learns and one that cannot. Every trial sees the same
        # batches from the same start, so at a rung a hopeless trial is strictly worse than a
        # good one and ties another hopeless one.
        "search_space": {
            "hyperparameters.learning_rate": {"type": "categorical", "choices": [GOOD_LR, HOPELESS_LR]}
        },
        "objective_metric": "train_loss",
        "n_trials": 4,
        "parallelism": 2,
        # TPE's first trials are random: with seed 6 they ask good, good, hopeless, good. The
        # hopeless third starts once a good one has passed ASHA's rungs, so ASHA stops it for sure.
        "seed": 6,
    }
    created = alice.post("sweeps", json=body)
    assert created.status_code == 201, created.text
    sweep = created.json()
    assert sweep["backend"] == "ray" and sweep["pruner"] == "successive_halving"
    sweep_id, driver_id = sweep["id"], sweep["driver_job"]

    deadline = time.monotonic() + 600
    seen_running_trial = False
    while (sweep := alice.get(f"sweeps/{sweep_id}").json())["status"] == "running":
        assert time.monotonic() < deadline, sweep
        seen_running_trial |= any(t["state"] == "running" for t in sweep["trials"])
        time.sleep(1)
    driver = alice.get(f"jobs/{driver_id}").json()
    assert sweep["status"] == "finished", (sweep["stop_reason"], driver["error"])
    assert driver["status"] == "succeeded" and driver["mlflow_run_id"]

    trials = sweep["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2, 3], trials
    assert all(t["job"] is None and t["mlflow_run_id"] for t in trials), trials
    assert seen_running_trial  # reported while they ran, not only at the end
    pruned = [t for t in trials if t["state"] == "pruned"]
    complete = [t for t in trials if t["state"] == "complete"]
    assert pruned and len(pruned) + len(complete) == 4, trials
    assert all(t["params"]["hyperparameters.learning_rate"] == HOPELESS_LR for t in pruned)
    assert all(len(t["intermediate_values"]) < 8 for t in pruned)  # stopped before its last step
    assert all(isinstance(t["value"], float) and len(t["intermediate_values"]) == 8 for t in complete)
    assert sweep["best_trial"]["value"] == min(t["value"] for t in complete)
    assert sweep["best_trial"]["params"]["hyperparameters.learning_rate"] == GOOD_LR
    assert driver["metrics"]["trials_complete"] == len(complete)
    assert driver["metrics"]["best_train_loss"] == pytest.approx(sweep["best_trial"]["value"])

    # Each trial is an MLflow child run of the driver's run, with its curve; a pruned one ended KILLED.
    mlflow = MlflowClient(mlflow_server)
    for trial in trials:
        run = mlflow.get_run(trial["mlflow_run_id"])
        assert run.data.tags["mlflow.parentRunId"] == driver["mlflow_run_id"]
        assert run.data.params["learning_rate"] == str(trial["params"]["hyperparameters.learning_rate"])
        if trial["state"] == "complete":
            assert run.info.status == "FINISHED"
            assert len(mlflow.get_metric_history(run.info.run_id, "loss")) == 8
        else:
            assert run.info.status == "KILLED"

    # The page shows the trials and Optuna's charts of them, as for an Optuna sweep.
    browser = Client()
    browser.force_login(people["alice"])
    page = browser.get(f"/sweeps/{sweep_id}/").content.decode()
    assert 'id="trials"' in page and "Ray Tune in job" in page and 'id="figure-history"' in page


def test_a_ray_sweep_whose_every_trial_fails_stops_with_the_first_reason(setup):  # noqa: F811
    alice = setup["alice"]
    body = {
        "project": "demo",
        "name": "ray, wrong objective",
        "backend": "ray",
        "base_model": setup["base"],
        "dataset_version": setup["dataset"],
        "config": {"hyperparameters": {"max_steps": 2, "max_seq_length": 64, "checkpoint_every_steps": None}},
        "search_space": {"hyperparameters.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}},
        "objective_metric": "accuracy",  # training reports no such metric
        "pruner": "none",
        "n_trials": 2,
        "parallelism": 2,
    }
    created = alice.post("sweeps", json=body)
    assert created.status_code == 201, created.text
    sweep_id = created.json()["id"]
    deadline = time.monotonic() + 600
    while (sweep := alice.get(f"sweeps/{sweep_id}").json())["status"] == "running":
        assert time.monotonic() < deadline, sweep
        time.sleep(1)
    assert sweep["status"] == "stopped" and "every trial failed" in sweep["stop_reason"], sweep
    assert "training reported no 'accuracy'" in sweep["stop_reason"]
    assert [t["state"] for t in sweep["trials"]] == ["failed", "failed"]
    assert all("no 'accuracy'" in t["error"] for t in sweep["trials"]), sweep["trials"]
    driver = alice.get(f"jobs/{sweep['driver_job']}").json()
    assert driver["status"] == "failed" and driver["attempt"] == 1  # a bad sweep is not retried
