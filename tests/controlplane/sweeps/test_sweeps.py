"""Sweeps: the control plane's Optuna study asks for trials, each an ordinary job; heartbeats feed
the pruner; a job's end is told to the study. Jobs here go to a queue no worker reads; the tests
play the worker's part through the same services the internal API calls."""

from __future__ import annotations

import pytest
from django.db import connection

from controlplane.sweeps.models import Sweep, SweepStatus, Trial, TrialState
from controlplane.sweeps.services import sweep_fill, sweeps_reconcile
from controlplane.training.models import Job, JobStatus
from controlplane.training.services import job_claim, job_finish, job_heartbeat
from tests.broker import queue_clear
from tests.factories import base_model_make, dataset_version_make
from workers.spec import Heartbeat, JobOutcome, JobResult

pytestmark = pytest.mark.django_db(transaction=True)

QUEUE = "sweeps-test"
LR = "hyperparameters.learning_rate"
SPACE = {
    "hyperparameters.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
    "method.r": {"type": "categorical", "choices": [4, 8, 16]},
}


@pytest.fixture(autouse=True)
def optuna_storage(settings, tmp_path, redis_url):
    if connection.vendor != "postgresql":
        # SQLite tests keep their database in memory, where Optuna cannot reach it.
        settings.OPTUNA_STORAGE_URL = f"sqlite:///{tmp_path / 'optuna.sqlite3'}"
    queue_clear(redis_url, QUEUE)
    yield
    queue_clear(redis_url, QUEUE)


@pytest.fixture
def inputs(people):
    return {
        "base_model": base_model_make(people["demo"]).pk,
        "dataset_version": dataset_version_make(people["demo"], people["alice"]).pk,
    }


def sweep_body(inputs, **overrides) -> dict:
    return {
        "project": "demo", "name": "lr search", **inputs, "search_space": SPACE,
        "config": {"resources": {"queue": QUEUE}, "hyperparameters": {"max_steps": 10}},
        "n_trials": 4, "parallelism": 2, "seed": 7, **overrides,
    }  # fmt: skip


def run_trial(job: Job, *, losses: list[float], outcome=JobOutcome.SUCCEEDED) -> str:
    """Play a worker: claim, report a loss per step (stopping if told), finish."""
    job_claim(job_id=job.pk, attempt=1, worker="w1")
    for step, loss in enumerate(losses, start=1):
        reply = job_heartbeat(
            job_id=job.pk,
            heartbeat=Heartbeat(attempt=1, worker="w1", step=step, total_steps=len(losses),
                                metrics={"loss": [(step, loss)]}),
        )  # fmt: skip
        if reply.stop:
            job_finish(job_id=job.pk, result=JobResult(attempt=1, worker="w1", outcome=JobOutcome.CANCELLED,
                                                       error=reply.reason))  # fmt: skip
            return reply.reason
    metrics = {"train_loss": losses[-1]} if outcome == JobOutcome.SUCCEEDED else {}
    error = "" if outcome == JobOutcome.SUCCEEDED else "CUDA error: out of memory"
    job_finish(job_id=job.pk, result=JobResult(attempt=1, worker="w1", outcome=outcome, metrics=metrics,
                                               error=error))  # fmt: skip
    return ""


def running_trials(sweep_id: int) -> list[Trial]:
    return list(Trial.objects.filter(sweep_id=sweep_id, state=TrialState.RUNNING).select_related("job"))


def test_a_sweep_runs_its_budget_of_trials_as_jobs_at_its_parallelism(api_for, inputs):
    body = api_for("alice").post("/api/v1/sweeps", sweep_body(inputs, pruner="none"), format="json")
    assert body.status_code == 201, body.json()
    sweep_id = body.json()["id"]
    trials = running_trials(sweep_id)
    assert len(trials) == 2  # its parallelism
    for trial in trials:
        config = trial.job.config
        assert config["hyperparameters"]["learning_rate"] == trial.params["hyperparameters.learning_rate"]
        assert (
            config["method"]["r"] == trial.params["method.r"] and config["hyperparameters"]["max_steps"] == 10
        )
        assert 1e-5 <= trial.params["hyperparameters.learning_rate"] <= 1e-2
    assert trials[0].params != trials[1].params

    finished = 0
    while running := running_trials(sweep_id):
        run_trial(running[0].job, losses=[2.0, 1.5, 1.0 + finished / 10])
        finished += 1
    sweep = Sweep.objects.get(pk=sweep_id)
    assert finished == 4 and sweep.status == SweepStatus.FINISHED
    detail = api_for("bob").get(f"/api/v1/sweeps/{sweep_id}").json()
    assert [t["state"] for t in detail["trials"]] == ["complete"] * 4
    assert detail["best_trial"]["value"] == pytest.approx(1.0)
    assert api_for("charlie").get(f"/api/v1/sweeps/{sweep_id}").status_code == 404


def test_a_trial_worse_than_the_median_is_pruned_through_its_heartbeat(api_for, inputs):
    sweep_id = (
        api_for("alice")
        .post("/api/v1/sweeps", sweep_body(inputs, n_trials=3, parallelism=1), format="json")
        .json()["id"]
    )
    for _ in range(2):  # the pruner judges once two trials have finished
        run_trial(running_trials(sweep_id)[0].job, losses=[2.0, 1.0, 0.5, 0.4])
    (third,) = running_trials(sweep_id)
    reason = run_trial(third.job, losses=[2.0, 3.0, 3.5, 4.0])
    assert reason.startswith("pruned by the sweep's median pruner")
    third.refresh_from_db()
    third.job.refresh_from_db()
    assert third.state == TrialState.PRUNED and third.job.status == JobStatus.CANCELLED
    assert Sweep.objects.get(pk=sweep_id).status == SweepStatus.FINISHED


def test_a_trial_judged_worse_only_at_its_last_step_finishes_and_counts_as_complete(api_for, inputs):
    sweep_id = (
        api_for("alice")
        .post("/api/v1/sweeps", sweep_body(inputs, n_trials=3, parallelism=1), format="json")
        .json()["id"]
    )
    for _ in range(2):
        run_trial(running_trials(sweep_id)[0].job, losses=[2.0, 1.0, 0.5, 0.4])
    (third,) = running_trials(sweep_id)
    # The median pruner would stop it at step 4 of 4: its compute is already spent.
    assert run_trial(third.job, losses=[2.0, 1.0, 0.5, 4.0]) == ""
    third.refresh_from_db()
    third.job.refresh_from_db()
    assert third.job.status == JobStatus.SUCCEEDED and third.job.metrics == {"train_loss": 4.0}
    assert third.state == TrialState.COMPLETE and third.value == pytest.approx(4.0)
    assert Sweep.objects.get(pk=sweep_id).status == SweepStatus.FINISHED


def test_a_prune_told_with_the_final_heartbeat_does_not_cancel_a_finished_trial(api_for, inputs):
    """The trainer's last points arrive in the heartbeat sent once it has ended: too late to save anything."""
    sweep_id = (
        api_for("alice")
        .post("/api/v1/sweeps", sweep_body(inputs, n_trials=3, parallelism=1), format="json")
        .json()["id"]
    )
    for _ in range(2):
        run_trial(running_trials(sweep_id)[0].job, losses=[2.0, 1.0, 0.5, 0.4])
    (third,) = running_trials(sweep_id)
    job_claim(job_id=third.job.pk, attempt=1, worker="w1")
    points = [(1, 2.0), (2, 3.0), (3, 3.5), (4, 4.0)]  # heartbeat.step lags behind its points
    reply = job_heartbeat(
        job_id=third.job.pk,
        heartbeat=Heartbeat(attempt=1, worker="w1", step=3, total_steps=4, metrics={"loss": points}),
    )
    assert not reply.stop
    job_finish(job_id=third.job.pk, result=JobResult(attempt=1, worker="w1", outcome=JobOutcome.SUCCEEDED,
                                                     metrics={"train_loss": 4.0}))  # fmt: skip
    third.refresh_from_db()
    assert third.state == TrialState.COMPLETE and third.value == pytest.approx(4.0)


def test_failed_trials_can_be_rerun_with_the_same_parameters(api_for, inputs):
    sweep_id = (
        api_for("alice")
        .post("/api/v1/sweeps", sweep_body(inputs, n_trials=2, parallelism=2, pruner="none"), format="json")
        .json()["id"]
    )
    first, second = running_trials(sweep_id)
    run_trial(first.job, losses=[2.0], outcome=JobOutcome.FAILED)
    run_trial(second.job, losses=[1.0])
    assert Sweep.objects.get(pk=sweep_id).status == SweepStatus.FINISHED
    # Retrying the job itself would leave the study behind: the sweep reruns it.
    assert api_for("alice").post(f"/api/v1/jobs/{first.job_id}/retry").status_code == 409

    body = api_for("alice").post(f"/api/v1/sweeps/{sweep_id}/rerun-failed").json()
    assert body["status"] == "running" and body["n_trials"] == 3
    (rerun,) = running_trials(sweep_id)
    assert rerun.params == first.params and rerun.number == 2
    run_trial(rerun.job, losses=[0.5])
    assert api_for("alice").post(f"/api/v1/sweeps/{sweep_id}/rerun-failed").json()["n_trials"] == 3


def test_a_paused_sweep_launches_nothing_until_resumed_and_a_lost_hook_is_caught_up(api_for, inputs):
    alice = api_for("alice")
    sweep_id = alice.post(
        "/api/v1/sweeps", sweep_body(inputs, n_trials=3, parallelism=1), format="json"
    ).json()["id"]
    assert alice.post(f"/api/v1/sweeps/{sweep_id}/pause").json()["status"] == "paused"
    run_trial(running_trials(sweep_id)[0].job, losses=[1.0])
    assert running_trials(sweep_id) == []  # paused: the finished trial is not replaced
    assert alice.post(f"/api/v1/sweeps/{sweep_id}/resume").json()["status"] == "running"
    (second,) = running_trials(sweep_id)
    # The control plane dies right after a trial's job ends: the reconciler tells the study later.
    Job.objects.filter(pk=second.job_id).update(status=JobStatus.SUCCEEDED, metrics={"train_loss": 0.9})
    assert sweeps_reconcile() == 1
    second.refresh_from_db()
    assert second.state == TrialState.COMPLETE and second.value == 0.9
    assert len(running_trials(sweep_id)) == 1


def test_the_gpu_hour_cap_stops_the_sweep_and_its_running_trials(api_for, inputs):
    body = sweep_body(inputs, n_trials=5, parallelism=1, gpu_hours_cap=1.0)
    body["config"]["resources"]["gpus"] = 1
    sweep_id = api_for("alice").post("/api/v1/sweeps", body, format="json").json()["id"]
    (first,) = running_trials(sweep_id)
    run_trial(first.job, losses=[1.0])
    Job.objects.filter(pk=first.job_id).update(run_seconds=3600)  # it held its GPU for an hour
    (second,) = running_trials(sweep_id)
    job_claim(job_id=second.job_id, attempt=1, worker="w1")
    sweep_fill(sweep_id=sweep_id)
    sweep = Sweep.objects.get(pk=sweep_id)
    assert sweep.status == SweepStatus.STOPPED and "cap of 1 GPU-hours" in sweep.stop_reason
    assert Job.objects.get(pk=second.job_id).status == JobStatus.CANCELLING
    assert Trial.objects.filter(sweep_id=sweep_id).count() == 2


@pytest.mark.parametrize(
    "space, message",
    [
        ({}, "the search space is empty"),
        ({LR: {"type": "float", "low": 0.01, "high": 0.01}}, "the range is empty"),
        ({LR: {"type": "float", "low": -1, "high": 0.1, "log": True}}, "a log scale needs a positive low"),
        ({"hyperparameters.nonsense": {"type": "int", "low": 1, "high": 4}}, "is not a tunable parameter"),
        ({LR: {"type": "float", "low": 0.1, "high": 5.0}}, "the value 5.0 is refused"),
        ({"method.r": {"type": "categorical", "choices": []}}, "search_space"),
        ({"method.r": {"type": "uniform", "low": 1, "high": 2}}, "search_space"),
    ],
)  # fmt: skip
def test_a_bad_search_space_is_a_400_with_a_message_and_creates_nothing(api_for, inputs, space, message):
    response = api_for("alice").post("/api/v1/sweeps", sweep_body(inputs, search_space=space), format="json")
    assert response.status_code == 400 and message in response.json()["message"], response.json()
    assert not Sweep.objects.exists() and not Job.objects.exists()


def test_bad_sweep_settings_are_400s_and_outsiders_get_404(api_for, inputs):
    alice = api_for("alice")
    for overrides, message in [
        ({"sampler": "magic"}, "sampler: Input should be 'tpe'"),
        ({"n_trials": 0}, "n_trials: Input should be greater than or equal to 1"),
        ({"parallelism": "two"}, "parallelism"),
        ({"sampler": "grid"}, "a grid needs categorical or linear integer parameters"),
        ({"unknown": 1}, "unknown"),
        (
            {"config": {"resources": {"queue": QUEUE}, "export": {"merge_adapter": True}}},
            "do not export merged models",
        ),
        (
            {"backend": "ray", "config": {"resources": {"queue": QUEUE, "gpus": 2}}},
            "train in one process each",
        ),
    ]:
        response = alice.post("/api/v1/sweeps", sweep_body(inputs, **overrides), format="json")
        assert response.status_code == 400 and message in response.json()["message"], (
            overrides,
            response.json(),
        )
    assert api_for("charlie").post("/api/v1/sweeps", sweep_body(inputs), format="json").status_code == 404
    assert api_for("viv").post("/api/v1/sweeps", sweep_body(inputs), format="json").status_code == 403
    assert not Sweep.objects.exists()


def test_the_sweep_pages_launch_show_trials_and_charts_and_refuse_outsiders(people, inputs):
    from django.test import Client

    alice, charlie = Client(), Client()
    alice.force_login(people["alice"])
    charlie.force_login(people["charlie"])
    form = {
        "name": "from the page", **inputs, "method": "lora", "max_steps": 10, "batch_size": 4,
        "max_seq_length": 64, "gpus": 0, "queue": QUEUE, "search_space": "{not json",
        "objective_metric": "train_loss",
        "direction": "minimize", "sampler": "random", "pruner": "none", "n_trials": 3, "parallelism": 1,
        "seed": 1,
    }  # fmt: skip
    page = alice.post("/p/demo/sweeps/new", form).content.decode()
    assert "not valid JSON" in page and not Sweep.objects.exists()
    form["search_space"] = '{"hyperparameters.learning_rate": {"type": "float", "low": 1, "high": 0.1}}'
    page = alice.post("/p/demo/sweeps/new", form).content.decode()
    assert "the range is empty" in page and not Sweep.objects.exists()
    form["search_space"] = '{"hyperparameters.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}}'
    response = alice.post("/p/demo/sweeps/new", form)
    sweep = Sweep.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/sweeps/{sweep.pk}/"
    assert {trial.job.queue for trial in running_trials(sweep.pk)} == {QUEUE}
    for _ in range(2):
        run_trial(running_trials(sweep.pk)[0].job, losses=[2.0, 1.0])
    html = alice.get(f"/sweeps/{sweep.pk}/").content.decode()
    assert 'id="trials"' in html and "Register as a model version" in html
    assert 'id="figure-history"' in html and 'id="figure-parallel"' in html
    assert "from the page" in alice.get("/p/demo/").content.decode()
    assert alice.post(f"/sweeps/{sweep.pk}/pause").status_code == 302
    assert Sweep.objects.get().status == SweepStatus.PAUSED
    assert charlie.get(f"/sweeps/{sweep.pk}/").status_code == 404
    assert charlie.post(f"/sweeps/{sweep.pk}/stop").status_code == 404
    assert charlie.get("/p/demo/sweeps/new").status_code == 404
    alice.post(f"/sweeps/{sweep.pk}/add-trials", {"count": "lots"})  # refused, with a message
    assert Sweep.objects.get().n_trials == 3


# --- the ray backend: one driver job, its trials reported over the internal API ------------


@pytest.fixture
def worker_api():
    from django.conf import settings
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {settings.WORKER_TOKEN}")
    return client


def report(worker_api, job_id: int, **fields):
    body = {"attempt": 1, "number": 0, "params": {LR: 0.001}, "state": "running", **fields}
    return worker_api.post(f"/internal/v1/jobs/{job_id}/sweep-trials", body, format="json")


def test_a_ray_sweep_is_one_driver_job_whose_spec_carries_the_search(api_for, inputs):
    created = api_for("alice").post("/api/v1/sweeps", sweep_body(inputs, backend="ray"), format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["backend"] == "ray" and body["pruner"] == "successive_halving" and body["trials"] == []
    (job,) = Job.objects.all()  # no trial jobs: Ray Tune runs them inside this one
    assert body["driver_job"] == job.pk and job.queue == QUEUE and job.kind == "sweep-driver"
    assert api_for("alice").get(f"/api/v1/jobs/{job.pk}").json()["kind"] == "sweep-driver"
    spec = job_claim(job_id=job.pk, attempt=1, worker="w1")
    assert spec.kind == "sweep-driver" and spec.config.hyperparameters.max_steps == 10
    assert set(spec.sweep.search_space) == set(SPACE) and spec.sweep.scheduler == "asha"
    assert (spec.sweep.n_trials, spec.sweep.max_concurrent_trials, spec.sweep.seed) == (4, 2, 7)
    assert spec.sweep.first_trial_number == 0 and spec.sweep.direction == "minimize"


def test_a_ray_driver_reports_trials_which_the_sweep_shows_and_its_end_finishes_the_sweep(
    api_for, inputs, worker_api
):
    sweep_id = (
        api_for("alice")
        .post("/api/v1/sweeps", sweep_body(inputs, backend="ray", n_trials=2), format="json")
        .json()["id"]
    )
    job = Job.objects.get()
    job_claim(job_id=job.pk, attempt=1, worker="w1")
    assert report(worker_api, job.pk, intermediate_values=[[1, 2.0]]).status_code == 200
    assert report(worker_api, job.pk, number=1, state="running").status_code == 200
    done = {
        "state": "complete",
        "value": 0.5,
        "intermediate_values": [[1, 2.0], [2, 1.0]],
        "mlflow_run_id": "r0",
    }
    assert report(worker_api, job.pk, **done).status_code == 200
    # A repeated or late report never reopens an ended trial.
    assert report(worker_api, job.pk, state="running").status_code == 200
    detail = api_for("bob").get(f"/api/v1/sweeps/{sweep_id}").json()
    first, second = detail["trials"]
    assert first | {"params": None} == {
        "number": 0, "job": None, "job_status": None, "state": "complete", "value": 0.5, "params": None,
        "intermediate_values": [[1, 2.0], [2, 1.0]], "mlflow_run_id": "r0", "error": "",
    }  # fmt: skip
    assert second["state"] == "running" and detail["trials_launched"] == 2
    assert detail["best_trial"]["number"] == 0 and detail["status"] == "running"

    # The driver ends: the sweep finishes, and a trial it never ended is failed with it.
    job_finish(job_id=job.pk, result=JobResult(attempt=1, worker="w1", outcome=JobOutcome.SUCCEEDED))
    detail = api_for("bob").get(f"/api/v1/sweeps/{sweep_id}").json()
    assert detail["status"] == "finished" and [t["state"] for t in detail["trials"]] == ["complete", "failed"]
    # An attempt that no longer runs is refused.
    assert report(worker_api, job.pk, number=2).status_code == 409
    assert api_for("charlie").get(f"/api/v1/sweeps/{sweep_id}").status_code == 404


def test_bad_trial_reports_are_400s_and_only_workers_may_send_them(api_for, inputs, worker_api):
    api_for("alice").post("/api/v1/sweeps", sweep_body(inputs, backend="ray"), format="json")
    job = Job.objects.get()
    job_claim(job_id=job.pk, attempt=1, worker="w1")
    for fields, message in [
        ({"params": {"hyperparameters.nonsense": 1}}, "does not search"),
        ({"state": "exploded"}, "state"),
        ({"value": "NaN", "state": "complete"}, "value"),
        ({"number": -1}, "number"),
        ({"intermediate_values": [[1]]}, "intermediate_values"),
    ]:
        response = report(worker_api, job.pk, **fields)
        assert response.status_code == 400 and message in response.json()["message"], (
            fields,
            response.json(),
        )
    assert report(worker_api, 10**6).status_code == 404
    assert (
        api_for("alice")
        .post(f"/internal/v1/jobs/{job.pk}/sweep-trials", {"attempt": 1}, format="json")
        .status_code
        == 403
    )
    assert not Trial.objects.exists()


def test_ray_sweep_settings_it_cannot_honour_are_400s(api_for, inputs):
    alice = api_for("alice")
    for overrides, message in [
        ({"backend": "spark"}, "backend: Input should be 'optuna' or 'ray'"),
        ({"backend": "ray", "sampler": "grid"}, "a ray sweep samples with tpe or random"),
        ({"backend": "ray", "pruner": "median"}, "a ray sweep's pruner is"),
        ({"backend": "ray", "gpu_hours_cap": 2.0}, "a ray sweep takes no 'gpu_hours_cap'"),
    ]:
        response = alice.post("/api/v1/sweeps", sweep_body(inputs, **overrides), format="json")
        assert response.status_code == 400 and message in response.json()["message"], response.json()
    assert not Sweep.objects.exists() and not Job.objects.exists()


def test_a_ray_sweep_can_be_stopped_but_not_paused_or_extended(api_for, inputs):
    alice = api_for("alice")
    sweep_id = alice.post("/api/v1/sweeps", sweep_body(inputs, backend="ray"), format="json").json()["id"]
    job = Job.objects.get()
    job_claim(job_id=job.pk, attempt=1, worker="w1")
    for action, body in [("pause", None), ("add-trials", {"count": 2}), ("rerun-failed", None)]:
        response = alice.post(f"/api/v1/sweeps/{sweep_id}/{action}", body, format="json")
        assert response.status_code == 400 and "can be stopped" in response.json()["message"], action
    assert alice.post(f"/api/v1/jobs/{job.pk}/retry").status_code == 409
    assert alice.post(f"/api/v1/sweeps/{sweep_id}/stop").json()["status"] == "stopped"
    assert Job.objects.get().status == JobStatus.CANCELLING  # the runner kills the driver
    job_finish(job_id=job.pk, result=JobResult(attempt=1, worker="w1", outcome=JobOutcome.CANCELLED))
    sweep = Sweep.objects.get()
    assert sweep.status == SweepStatus.STOPPED and sweep.stop_reason == "stopped by alice"


def test_a_lost_driver_end_is_caught_up_and_a_failed_driver_stops_its_sweep(api_for, inputs):
    api_for("alice").post("/api/v1/sweeps", sweep_body(inputs, backend="ray"), format="json")
    Job.objects.update(status=JobStatus.FAILED, error="every trial failed; the first: boom")
    assert sweeps_reconcile() == 0
    sweep = Sweep.objects.get()
    assert sweep.status == SweepStatus.STOPPED and "boom" in sweep.stop_reason


def test_the_new_sweep_page_launches_a_ray_sweep_and_its_page_shows_reported_trials(
    people, inputs, worker_api
):
    from django.test import Client

    alice = Client()
    alice.force_login(people["alice"])
    form = {
        "name": "ray from the page", **inputs, "method": "lora", "max_steps": 10, "batch_size": 4,
        "max_seq_length": 64, "gpus": 0, "queue": QUEUE, "backend": "ray", "objective_metric": "train_loss",
        "search_space": '{"hyperparameters.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}}',
        "direction": "minimize", "sampler": "tpe", "pruner": "median", "n_trials": 3, "parallelism": 2,
        "seed": 1,
    }  # fmt: skip
    assert "a ray sweep&#x27;s pruner is" in alice.post("/p/demo/sweeps/new", form).content.decode()
    form["pruner"] = ""  # the backend's usual: ASHA
    response = alice.post("/p/demo/sweeps/new", form)
    sweep = Sweep.objects.get()
    assert response.status_code == 302 and (sweep.backend, sweep.pruner) == ("ray", "successive_halving")
    job_claim(job_id=sweep.driver_job_id, attempt=1, worker="w1")
    report(worker_api, sweep.driver_job_id, state="failed", error="CUDA error: out of memory")
    report(worker_api, sweep.driver_job_id, number=1, state="complete", value=0.7, mlflow_run_id="abc")
    html = alice.get(f"/sweeps/{sweep.pk}/").content.decode()
    assert "Ray Tune in job" in html and "CUDA error: out of memory" in html and "0.7000" in html
    assert "Pause" not in html and "Add trials" not in html and "Stop" in html


def test_the_sweep_pages_read_as_people_write_and_link_back_to_the_project_and_to_compare(
    people, api_for, inputs
):
    from django.test import Client

    alice = Client()
    alice.force_login(people["alice"])
    form = alice.get("/p/demo/sweeps/new").content.decode()
    for label in (">TPE<", ">CMA-ES<", ">QMC<", "GPUs", "Search space", 'href="/p/demo/"'):
        assert label in form, label
    for raw in ("Tpe", "Cmaes", "Qmc", "Gpus"):
        assert raw not in form, raw

    body = sweep_body(inputs, n_trials=3, parallelism=1, pruner="none")
    sweep_id = api_for("alice").post("/api/v1/sweeps", body, format="json").json()["id"]
    finals = [0.9, 0.5, 0.7]
    for final in finals:
        run_trial(running_trials(sweep_id)[0].job, losses=[2.0, final])
    html = alice.get(f"/sweeps/{sweep_id}/").content.decode()
    assert 'href="/p/demo/"' in html and "TPE sampler, no pruner" in html
    by_value = sorted(Trial.objects.filter(sweep_id=sweep_id), key=lambda trial: trial.value)
    runs = ",".join(str(trial.job_id) for trial in by_value)
    assert f'href="/compare/?runs={runs}"' in html  # best first, by the objective
    # Finished: no Pause or Stop, on the page or in its refreshed panel's out-of-band actions.
    live = alice.get(f"/sweeps/{sweep_id}/live").content.decode()
    for page in (html, live):
        assert ">Pause<" not in page and ">Stop<" not in page and "Add trials" in page
    assert 'id="sweep-actions" hx-swap-oob="true"' in live and "hx-get" not in live
