from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from workers.gpus import GpuPool, gpu_inventory, visible_devices
from workers.spec import GpuState

FAKE_SMI = """#!/bin/sh
echo "0, NVIDIA H200, 143771, 1024, 37"
echo "1, NVIDIA H200, 143771, [N/A], [N/A]"
"""


@pytest.fixture
def fake_nvidia_smi(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("TUNEYARD_GPUS", raising=False)
    monkeypatch.delenv("TUNEYARD_GPU_IDS", raising=False)


def test_gpus_are_read_from_nvidia_smi(fake_nvidia_smi):
    first, second = gpu_inventory()
    assert first == GpuState(
        index=0, name="NVIDIA H200", memory_total_mb=143771, memory_used_mb=1024, utilization_percent=37
    )
    assert (second.index, second.memory_used_mb, second.utilization_percent) == (1, None, None)


def test_a_worker_can_be_given_only_some_gpus(fake_nvidia_smi, monkeypatch):
    monkeypatch.setenv("TUNEYARD_GPU_IDS", "1")
    assert [gpu.index for gpu in gpu_inventory()] == [1]


def test_no_nvidia_smi_means_no_gpus(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("TUNEYARD_GPUS", raising=False)
    assert gpu_inventory() == []


def test_the_override_simulates_gpus(monkeypatch):
    monkeypatch.setenv("TUNEYARD_GPUS", "3")
    assert [gpu.index for gpu in gpu_inventory()] == [0, 1, 2]


def test_a_job_gets_whole_gpus_or_a_clear_refusal():
    pool = GpuPool([4, 5, 6])
    assert visible_devices(pool.acquire(0)) == ""
    assert visible_devices(pool.acquire(2)) == "4,5"
    with pytest.raises(ValueError, match="needs 4 GPU"):
        pool.acquire(4)


def test_jobs_share_a_worker_gpu_by_gpu_and_a_big_one_waits_for_enough_free():
    pool = GpuPool([0, 1, 2])
    first, second = pool.acquire(1), pool.acquire(1)
    assert first != second
    got: list[list[int]] = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire(2)))
    waiter.start()
    waiter.join(timeout=0.3)
    assert waiter.is_alive() and got == []  # one GPU free, two needed: it waits
    pool.release(first)
    waiter.join(timeout=5)
    assert got and sorted(got[0]) == sorted({0, 1, 2} - set(second))


def test_gpu_discovery_needs_no_torch():
    code = "import sys, workers.gpus; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2]
    )
    assert out.stdout.strip() == "False", out.stderr
