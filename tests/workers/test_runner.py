"""The runner against the live control plane, with stand-in trainers that misbehave the way
real ones do: NaN losses, stray bytes, huge lines, hanging, and a supervisor that breaks."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from controlplane.training.models import Job, JobStatus
from controlplane.training.services import job_cancel
from tests.factories import job_make
from workers import runner
from workers.controlplane_client import ControlPlaneClient
from workers.spec import JobSpec

pytestmark = pytest.mark.django_db(transaction=True)

NOISY = r"""
import json, sys
P = "@@tuneyard "
def emit(e): print(P + json.dumps(e), flush=True)
nan = float("nan")
emit({"event": "progress", "step": 1, "total_steps": 2, "metrics": {"loss": nan, "learning_rate": 0.1}})
sys.stdout.buffer.write(b"bad byte \xff here\n"); sys.stdout.flush()
print("x" * 5000 + "\0tail", flush=True)
emit({"event": "progress", "step": 2, "total_steps": 2, "metrics": {"loss": 1.5}})
metrics = {"train_loss": float("inf"), "train_runtime": 1.0}
emit({"event": "result", "metrics": metrics, "artifacts": {"model": "runs:/x/model"}})
"""

HANGS = r"""
import os, sys, time, pathlib
pathlib.Path(sys.argv[1]).write_text(str(os.getpid()))
event = '{"event": "progress", "step": 1, "total_steps": 100, "metrics": {"loss": 2.0}}'
print("@@tuneyard " + event, flush=True)
time.sleep(600)
"""


@pytest.fixture
def client(live_server, settings):
    client = ControlPlaneClient(live_server.url, settings.WORKER_TOKEN, tries=2)
    yield client
    client.close()


def _spec(job: Job) -> JobSpec:
    from controlplane.training.services import job_spec_build

    return job_spec_build(
        Job.objects.select_related("project", "base_model", "dataset_version").get(pk=job.pk)
    )


def test_nan_metrics_stray_bytes_and_huge_lines_do_not_break_the_job(people, client, monkeypatch):
    monkeypatch.setattr(runner, "_trainer_command", lambda spec_path, workdir: [sys.executable, "-c", NOISY])
    job = job_make(people["demo"], people["alice"])
    assert runner.job_run(_spec(job), client=client, worker="w1", heartbeat_seconds=0.2) == "succeeded"
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert job.metrics == {"train_runtime": 1.0}  # the infinite loss is not a metric
    points = set(job.metric_points.values_list("name", "step", "value"))
    assert points == {("learning_rate", 1, 0.1), ("loss", 2, 1.5)}
    lines = list(job.log_lines.values_list("text", flat=True))
    assert any("loss is nan at step 1" in line for line in lines)
    assert any("bad byte \ufffd here" in line for line in lines)
    long = next(line for line in lines if line.startswith("xxx"))
    assert len(long) == 2000 and "\0" not in long


def test_a_cancel_kills_the_trainer_and_its_whole_process_group(people, client, monkeypatch, tmp_path):
    pid_file = tmp_path / "pid"
    monkeypatch.setattr(
        runner, "_trainer_command", lambda spec_path, workdir: [sys.executable, "-c", HANGS, str(pid_file)]
    )
    job = job_make(people["demo"], people["alice"])
    outcome: list[str] = []
    thread = threading.Thread(
        target=lambda: outcome.append(
            runner.job_run(_spec(job), client=client, worker="w1", heartbeat_seconds=0.2)
        )
    )
    thread.start()
    deadline = time.monotonic() + 30
    while Job.objects.get(pk=job.pk).step < 1:
        assert time.monotonic() < deadline, "the trainer never reported"
        time.sleep(0.1)
    job_cancel(job=Job.objects.get(pk=job.pk), user=people["alice"])
    thread.join(timeout=30)
    assert outcome == ["cancelled"]
    assert Job.objects.get(pk=job.pk).status == JobStatus.CANCELLED
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_a_broken_supervisor_still_kills_the_trainer_and_fails_the_job(
    people, client, monkeypatch, tmp_path, settings
):
    settings.JOB_MAX_ATTEMPTS = 1  # on the last attempt, a retryable failure fails the job
    pid_file = tmp_path / "pid"
    monkeypatch.setattr(
        runner, "_trainer_command", lambda spec_path, workdir: [sys.executable, "-c", HANGS, str(pid_file)]
    )
    real_drain = runner._drain
    calls = []

    def drain_then_break(lines, progress):
        real_drain(lines, progress)
        calls.append(1)
        if progress.step >= 1:
            raise RuntimeError("supervisor bug")

    monkeypatch.setattr(runner, "_drain", drain_then_break)
    job = job_make(people["demo"], people["alice"])
    assert runner.job_run(_spec(job), client=client, worker="w1", heartbeat_seconds=0.2) == "failed"
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "supervisor failed: supervisor bug" in job.error
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


SHOWS_DEVICES = r"""
import os
print("devices=" + repr(os.environ.get("CUDA_VISIBLE_DEVICES")), flush=True)
print("@@tuneyard " + '{"event": "result", "metrics": {}, "artifacts": {}}', flush=True)
"""


def test_a_job_sees_exactly_its_gpus(people, client, monkeypatch, request):
    monkeypatch.setenv("TUNEYARD_GPUS", "4")  # a simulated 4-GPU host
    monkeypatch.setenv("TUNEYARD_GPU_IDS", "2,3")  # of which this worker has two
    runner.gpu_pool_reset()
    request.addfinalizer(runner.gpu_pool_reset)
    monkeypatch.setattr(
        runner, "_trainer_command", lambda spec_path, workdir: [sys.executable, "-c", SHOWS_DEVICES]
    )
    job = job_make(people["demo"], people["alice"], config={"resources": {"gpus": 1, "queue": "runner-test"}})
    assert runner.job_run(_spec(job), client=client, worker="w1", heartbeat_seconds=0.2) == "succeeded"
    job.refresh_from_db()
    assert job.gpu_indices == [2]
    assert "devices='2'" in job.log_lines.values_list("text", flat=True)

    cpu_job = job_make(people["demo"], people["alice"], config={"resources": {"queue": "runner-test"}})
    runner.job_run(_spec(cpu_job), client=client, worker="w1", heartbeat_seconds=0.2)
    assert "devices=''" in cpu_job.log_lines.values_list("text", flat=True)


def test_an_attempt_past_its_time_limit_is_killed_and_fails_with_the_reason(
    people, client, monkeypatch, tmp_path
):
    pid_file = tmp_path / "pid"
    monkeypatch.setattr(
        runner, "_trainer_command", lambda spec_path, workdir: [sys.executable, "-c", HANGS, str(pid_file)]
    )
    job = job_make(people["demo"], people["alice"], config={"resources": {"timeout_seconds": 2}})
    assert runner.job_run(_spec(job), client=client, worker="w1", heartbeat_seconds=0.2) == "failed"
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.error == "timed out: the attempt ran past its limit of 2 s and was stopped"
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


CHECKPOINTS = r"""
import json
P = "@@tuneyard "
def emit(e): print(P + json.dumps(e), flush=True)
for step in (1, 2, 3):
    emit({"event": "progress", "step": step, "total_steps": 3, "metrics": {"loss": 1.0 / step}})
    if step == 2:
        emit({"event": "checkpoint", "step": 2, "uri": "runs:/r1/checkpoints/step-2"})
emit({"event": "result", "metrics": {}, "artifacts": {}})
"""


def test_a_stored_checkpoint_reaches_the_job_and_the_next_attempt_resumes_from_it(
    people, client, monkeypatch
):
    from controlplane.training.services import job_claim, job_retry

    monkeypatch.setattr(
        runner, "_trainer_command", lambda spec_path, workdir: [sys.executable, "-c", CHECKPOINTS]
    )
    job = job_make(people["demo"], people["alice"])
    assert runner.job_run(_spec(job), client=client, worker="w1", heartbeat_seconds=0.2) == "succeeded"
    job.refresh_from_db()
    assert (job.checkpoint_step, job.checkpoint_uri) == (2, "runs:/r1/checkpoints/step-2")
    assert any("checkpoint at step 2 stored" in line for line in job.log_lines.values_list("text", flat=True))

    # Made to fail so it can be retried: the new attempt is handed the checkpoint.
    Job.objects.filter(pk=job.pk).update(status=JobStatus.FAILED)
    job_retry(job=job, user=people["alice"])
    spec = job_claim(job_id=job.pk, attempt=2, worker="w2")
    assert spec.resume_checkpoint_uri == "runs:/r1/checkpoints/step-2"
    assert job.events.filter(attempt=2, to_status=JobStatus.RUNNING).get().message == (
        "resumes from the checkpoint at step 2"
    )


RUNNER_THEN_TRAINER = r"""
import os, subprocess, sys, time
code = "from workers.engine.lifeline import die_with_runner as d; d(); import time; time.sleep(600)"
env = dict(os.environ, TUNEYARD_RUNNER_PID=str(os.getpid()))
trainer = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
print(trainer.pid, flush=True)
time.sleep(600)
"""


def test_a_trainer_dies_with_its_runner_even_when_the_runner_is_killed_outright():
    import signal
    import subprocess

    parent = subprocess.Popen([sys.executable, "-c", RUNNER_THEN_TRAINER], stdout=subprocess.PIPE, text=True)
    trainer_pid = int(parent.stdout.readline())
    time.sleep(1.0)  # let the trainer make its request to the kernel
    os.kill(trainer_pid, 0)  # alive while its runner is
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            os.kill(trainer_pid, 0)
        except ProcessLookupError:
            break
        # A zombie still answers kill(0); it is dead once reaped by init.
        assert time.monotonic() < deadline, "the trainer outlived its SIGKILLed runner"
        time.sleep(0.1)


SLOW_SHOWS_DEVICES = r"""
import os, time
print("devices=" + os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
time.sleep(2)
print("@@tuneyard " + '{"event": "result", "metrics": {}, "artifacts": {}}', flush=True)
"""


def test_a_two_gpu_worker_runs_two_one_gpu_jobs_at_once_each_on_its_own_gpu(
    people, client, monkeypatch, request
):
    monkeypatch.setenv("TUNEYARD_GPUS", "2")
    runner.gpu_pool_reset()
    request.addfinalizer(runner.gpu_pool_reset)
    monkeypatch.setattr(
        runner, "_trainer_command", lambda spec_path, workdir: [sys.executable, "-c", SLOW_SHOWS_DEVICES]
    )
    config = {"resources": {"gpus": 1, "queue": "runner-test"}}
    jobs = [job_make(people["demo"], people["alice"], config=config) for _ in range(2)]
    threads = [
        threading.Thread(target=runner.job_run, args=(_spec(job),), kwargs={"client": client, "worker": "w1"})
        for job in jobs
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    elapsed = time.monotonic() - started
    for job in jobs:
        job.refresh_from_db()
    assert [job.status for job in jobs] == [JobStatus.SUCCEEDED] * 2
    assert sorted(index for job in jobs for index in job.gpu_indices) == [0, 1]
    # Both ran at once: their running times overlap.
    first, second = sorted(jobs, key=lambda job: job.started_at)
    assert second.started_at < first.finished_at, elapsed


CRASHES = r"""
import sys
print("Traceback (most recent call last): ...", file=sys.stderr)
print("error: MlflowException: the tracking server went away", file=sys.stderr)
sys.exit(1)
"""


def test_a_crash_is_retried_as_a_new_attempt_and_a_bad_input_is_not(people, client, monkeypatch):
    monkeypatch.setattr(
        runner, "_trainer_command", lambda spec_path, workdir: [sys.executable, "-c", CRASHES]
    )
    job = job_make(people["demo"], people["alice"])
    assert runner.job_run(_spec(job), client=client, worker="w1", heartbeat_seconds=0.2) == "failed"
    job.refresh_from_db()
    assert (job.status, job.attempt) == (JobStatus.QUEUED, 2)
    assert "attempt 1 failed, trying again: error: MlflowException" in job.events.last().message

    bad_input = r"import sys; print('error: dataset row 3 has no output', file=sys.stderr); sys.exit(2)"
    monkeypatch.setattr(
        runner, "_trainer_command", lambda spec_path, workdir: [sys.executable, "-c", bad_input]
    )
    other = job_make(people["demo"], people["alice"])
    runner.job_run(_spec(other), client=client, worker="w1", heartbeat_seconds=0.2)
    other.refresh_from_db()
    assert (other.status, other.attempt, other.error) == (
        JobStatus.FAILED,
        1,
        "error: dataset row 3 has no output",
    )
