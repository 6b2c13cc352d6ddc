"""A job in two training processes (torchrun, DDP over gloo on the CPU), run for real on the tiny model.

The two-process run and its one-process twin start together in one
module-scoped fixture, as ``test_engine`` does, so the file spends its time
importing torch once per process rather than once per test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import load_file

from controlplane.training.models import Job, JobStatus
from controlplane.training.services import job_cancel, job_create
from tests.factories import FACTORY_QUEUE, base_model_make, dataset_version_make
from tests.workers.engine.runs import ROWS, EngineRun, empty_store, engine_finish, engine_start
from workers import runner
from workers.controlplane_client import ControlPlaneClient
from workers.engine.protocol import EXIT_INVALID_INPUT, EXIT_OK

STEPS = 4


def spec_make(job_id: int, model: Path, *, processes: int, batch_size: int) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "attempt": 1,
        "project": "demo",
        "base_model_uri": str(model),
        "mlflow_experiment": "tests/distributed",
        "config": {
            # No dropout: each process draws its own masks, so with it the two runs
            # would differ by chance, not by anything distribution gets wrong.
            "method": {"name": "lora", "dropout": 0.0},
            "hyperparameters": {
                "learning_rate": 1e-2,
                "max_steps": STEPS,
                "batch_size": batch_size,
                "seed": 0,
                "checkpoint_every_steps": 2,
            },
            "resources": {"cpu_processes": processes},
        },
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> dict[str, EngineRun]:
    base = tmp_path_factory.mktemp("distributed")
    store = empty_store(base / "empty-mlflow.db")
    rows = [json.dumps(row) for row in ROWS]
    # Both fail before any model loads: cheap next to the runs that train.
    deepspeed = spec_make(3, base / "no-model", processes=1, batch_size=2)
    deepspeed["config"]["resources"] = {"gpus": 2, "distributed": {"name": "deepspeed", "stage": 3}}
    bad_rows = [rows[0], json.dumps({"instruction": "Say hello."})]
    started = {
        "deepspeed": engine_start(base / "deepspeed", deepspeed, rows, store),
        "bad_row": engine_start(
            base / "bad_row", spec_make(4, base / "no-model", processes=2, batch_size=2), bad_rows, store
        ),
    }
    # The same global batch of 4 rows a step: 2 per process, or 4 in one.
    two = spec_make(1, demo_model_dir, processes=2, batch_size=2)
    started["two"] = engine_start(base / "two", two, rows, store)
    started["one"] = engine_start(
        base / "one", spec_make(2, demo_model_dir, processes=1, batch_size=4), rows, store
    )
    fsdp = spec_make(5, demo_model_dir, processes=2, batch_size=2)
    fsdp["config"]["resources"]["distributed"] = {"name": "fsdp"}
    started["fsdp"] = engine_start(base / "fsdp", fsdp, rows, store)
    finished = {name: engine_finish(process, base / name) for name, process in started.items()}
    resumed = {**two, "attempt": 2, "resume_checkpoint_uri": str(base / "two/work/trainer/checkpoint-2")}
    finished["resumed"] = engine_finish(
        engine_start(base / "resumed", resumed, rows, store), base / "resumed"
    )
    return finished


def test_a_two_process_job_reports_once_from_rank_zero(runs: dict[str, EngineRun]) -> None:
    run = runs["two"]
    assert run.returncode == EXIT_OK, run.stderr[-3000:]

    kinds = [event["event"] for event in run.events()]
    assert kinds == ["run", "progress", "progress", "checkpoint", "progress", "progress", "result"]
    assert [event["step"] for event in run.events("progress")] == list(range(1, STEPS + 1))
    # The second process trained too: its own RNG state is in the checkpoint.
    (run_id,) = {event["mlflow_run_id"] for event in run.events("run")}
    client = MlflowClient(tracking_uri=run.tracking_uri)
    stored = {Path(entry.path).name for entry in client.list_artifacts(run_id, "checkpoints/step-2")}
    assert {"adapter_model.safetensors", "optimizer.pt", "rng_state_0.pth", "rng_state_1.pth"} <= stored
    # One MLflow run, one loss curve.
    assert len(client.search_runs(experiment_ids=[client.get_run(run_id).info.experiment_id])) == 1
    assert len(client.get_metric_history(run_id, "loss")) == STEPS
    adapter = {Path(entry.path).name for entry in client.list_artifacts(run_id, "adapter")}
    assert "adapter_model.safetensors" in adapter


def test_two_processes_train_as_one_with_the_same_global_batch(runs: dict[str, EngineRun]) -> None:
    one, two = runs["one"], runs["two"]
    assert one.returncode == EXIT_OK, one.stderr[-3000:]
    assert two.returncode == EXIT_OK, two.stderr[-3000:]

    # The same rows in each step, gradients averaged over the same tokens: the
    # arithmetic differs only in the order of float32 sums (two partial sums,
    # then gloo's all-reduce), measured below 1e-6 relative here. A step changes
    # the loss by ~1e-3 relative, so 1e-5 catches a run that saw other rows or
    # weighted the processes' tokens wrongly.
    assert two.losses() == pytest.approx(one.losses(), rel=1e-5)
    final_two, final_one = (run.events("result")[0]["metrics"]["train_loss"] for run in (two, one))
    assert final_two == pytest.approx(final_one, rel=1e-5)
    assert two.losses()[-1] < two.losses()[0]


def test_fsdp_shards_the_model_and_trains_as_one_process_would(runs: dict[str, EngineRun]) -> None:
    one, fsdp = runs["one"], runs["fsdp"]
    assert fsdp.returncode == EXIT_OK, fsdp.stderr[-3000:]

    assert [event["event"] for event in fsdp.events()].count("result") == 1
    # Sharding changes where the weights live, not the arithmetic of a step.
    assert fsdp.losses() == pytest.approx(one.losses(), rel=1e-5)
    # The adapter was gathered whole from the shards and saved once: the same
    # tensors, whole, that the DDP run saved.
    run_id = fsdp.events("run")[0]["mlflow_run_id"]
    assert fsdp.events("result")[0]["artifacts"] == {"adapter": f"runs:/{run_id}/adapter"}
    stored = MlflowClient(tracking_uri=fsdp.tracking_uri).list_artifacts(run_id, "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {Path(entry.path).name for entry in stored}
    sharded, replicated = (
        load_file(run.workdir / "adapter" / "adapter_model.safetensors") for run in (fsdp, runs["two"])
    )
    assert sharded.keys() == replicated.keys()
    for name, tensor in sharded.items():
        assert torch.allclose(tensor, replicated[name], atol=1e-5), name


def test_a_two_process_job_resumes_from_its_checkpoint_step_for_step(runs: dict[str, EngineRun]) -> None:
    whole, resumed = runs["two"], runs["resumed"]
    assert resumed.returncode == EXIT_OK, resumed.stderr[-3000:]

    assert "resuming from the checkpoint at step 2" in resumed.stdout
    assert [event["step"] for event in resumed.events("progress")] == [3, 4]
    assert resumed.losses() == pytest.approx(whole.losses()[2:], rel=1e-6)


def test_deepspeed_on_a_worker_without_it_is_a_bad_input_before_any_process_starts(
    runs: dict[str, EngineRun],
) -> None:
    run = runs["deepspeed"]
    assert run.returncode == EXIT_INVALID_INPUT
    assert run.stderr.rstrip("\n").splitlines()[-1] == (
        "error: DeepSpeed ZeRO stage 3 was asked for, but this worker has no deepspeed package"
    )
    assert not run.events()


def test_a_bad_row_fails_a_two_process_job_as_a_bad_input_with_its_reason(runs: dict[str, EngineRun]) -> None:
    run = runs["bad_row"]
    # Not torchrun's exit code 1 and summary: the rank's own, so it is not retried.
    assert run.returncode == EXIT_INVALID_INPUT
    assert run.stderr.rstrip("\n").splitlines()[-1] == "error: dataset row 2 has no 'output' (train.jsonl)"
    assert [event["event"] for event in run.events()] == ["run"]


# --- cancel, through the worker's runner and the live control plane ------------------


def _job_processes(job_id: int, *, under: Path | None = None) -> set[int]:
    """The trainer's live processes: torchrun's agent and every rank name the job's spec file
    (in its folder ``under`` a test's own folder, when given)."""
    marker = f"tuneyard-job-{job_id}-".encode()
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            # A zombie's command line reads empty: it no longer runs.
            cmdline = (proc / "cmdline").read_bytes() if proc.name.isdigit() else b""
        except OSError:  # gone meanwhile
            continue
        if marker in cmdline and (under is None or str(under).encode() in cmdline):
            found.add(int(proc.name))
    return found


def _endless_two_process_job(
    people: dict, demo_model_dir: Path, tmp_path: Path, monkeypatch
) -> tuple[Job, Any]:
    """A queued two-process job that would train for hours, and its JobSpec."""
    from controlplane.training.services import job_spec_build
    from workers.spec import TrainingConfig

    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps(row) for row in ROWS) + "\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{empty_store(tmp_path / 'mlflow.db')}")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    project, alice = people["demo"], people["alice"]
    job = job_create(
        project=project,
        user=alice,
        base_model_id=base_model_make(project, uri=str(demo_model_dir)).pk,
        dataset_version_id=dataset_version_make(project, alice, uri=str(rows)).pk,
        config=TrainingConfig.model_validate(
            {
                "hyperparameters": {"max_steps": 100_000, "batch_size": 2, "checkpoint_every_steps": None},
                "resources": {"cpu_processes": 2, "queue": FACTORY_QUEUE},
            }
        ),
    )
    spec = job_spec_build(
        Job.objects.select_related("project", "base_model", "dataset_version").get(pk=job.pk)
    )
    return job, spec


@pytest.mark.django_db(transaction=True)
def test_a_cancel_kills_torchrun_and_every_rank(
    people: dict, live_server: Any, settings: Any, demo_model_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    job, spec = _endless_two_process_job(people, demo_model_dir, tmp_path, monkeypatch)
    client = ControlPlaneClient(live_server.url, settings.WORKER_TOKEN, tries=2)
    outcome: list[str] = []
    thread = threading.Thread(
        target=lambda: outcome.append(runner.job_run(spec, client=client, worker="w1", heartbeat_seconds=0.2))
    )
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while Job.objects.get(pk=job.pk).step < 1:  # both ranks train: a step needs them both
            assert thread.is_alive() and time.monotonic() < deadline, "the job never trained"
            time.sleep(0.2)
        assert len(_job_processes(job.pk)) == 3  # the agent and two ranks
        job_cancel(job=Job.objects.get(pk=job.pk), user=people["alice"])
        thread.join(timeout=60)
    finally:
        client.close()
    assert outcome == ["cancelled"]
    assert Job.objects.get(pk=job.pk).status == JobStatus.CANCELLED
    # The runner returns once the agent has exited; the ranks exit before it or with it.
    deadline = time.monotonic() + 5
    while _job_processes(job.pk) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _job_processes(job.pk)


# A worker process with the runner in its main thread. (A Celery worker runs it in a pool
# thread; the trainer's tie is to the thread that started it, which lives as long as the job.)
_WORKER = """
import sys
from pathlib import Path
from workers import runner
from workers.controlplane_client import ControlPlaneClient
from workers.spec import JobSpec

spec = JobSpec.model_validate_json(Path(sys.argv[1]).read_text())
client = ControlPlaneClient(sys.argv[2], sys.argv[3], tries=2)
runner.job_run(spec, client=client, worker="w1", heartbeat_seconds=0.2)
"""


@pytest.mark.django_db(transaction=True)
def test_a_sigkilled_worker_leaves_neither_torchrun_nor_any_rank_training(
    people: dict, live_server: Any, settings: Any, demo_model_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    job, spec = _endless_two_process_job(people, demo_model_dir, tmp_path, monkeypatch)
    spec_file = tmp_path / "job-spec.json"
    spec_file.write_text(spec.model_dump_json())
    command = [sys.executable, "-c", _WORKER, str(spec_file), live_server.url, settings.WORKER_TOKEN]
    # The job's folder, which a killed worker cannot remove, in this test's folder.
    env = dict(os.environ, TMPDIR=str(tmp_path))
    log = tmp_path / "worker.log"
    with log.open("wb") as stderr:
        worker = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[3], env=env, stderr=stderr)

    def ours() -> set[int]:
        return _job_processes(job.pk, under=tmp_path)

    try:
        deadline = time.monotonic() + 120
        while Job.objects.get(pk=job.pk).step < 1:  # a step needs both ranks
            assert worker.poll() is None, f"the worker died:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the job never trained:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        assert len(ours()) == 3  # the agent and two ranks
        # Frozen, as in a long step or while importing, they will not write to the closed pipe
        # and die of that: only their tie to the runner (workers.engine.lifeline) can end them.
        for pid in ours():
            os.kill(pid, signal.SIGSTOP)
        # Nothing can run in a SIGKILLed worker: the agent and ranks must go by themselves.
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        deadline = time.monotonic() + 10
        while ours() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = ours()
    finally:
        worker.kill()
        worker.wait(timeout=10)
        for pid in ours():  # never leave them training for the tests after this one
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert not left, f"still alive after their worker was killed: {sorted(left)}"
