"""The GPUs of this host, read with nvidia-smi (no torch, no CUDA context in the worker).

``TUNEYARD_GPUS`` overrides discovery: a count (``"2"``) pretends this host has
that many GPUs, for testing scheduling on a machine without any; ``"0"`` hides
real ones. ``TUNEYARD_GPU_IDS`` (``"2,3"``) gives this worker only those
devices, so several workers can share a host without sharing a GPU.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

from workers.spec import GpuState

QUERY = "index,name,memory.total,memory.used,utilization.gpu"


def _smi_gpus() -> list[GpuState]:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        result = subprocess.run(
            [smi, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in result.stdout.strip().splitlines():
        index, name, total, used, util = (part.strip() for part in line.split(","))
        gpus.append(
            GpuState(
                index=int(index),
                name=name,
                memory_total_mb=_number(total),
                memory_used_mb=_number(used),
                utilization_percent=_number(util),
            )
        )
    return gpus


def _number(text: str) -> int | None:
    # nvidia-smi prints "[N/A]" for what a device cannot report.
    return int(float(text)) if text.replace(".", "", 1).isdigit() else None


def gpu_inventory() -> list[GpuState]:
    """This worker's GPUs with their current memory and utilization."""
    override = os.environ.get("TUNEYARD_GPUS")
    if override is not None:
        gpus = [GpuState(index=i, name="simulated GPU") for i in range(int(override))]
    else:
        gpus = _smi_gpus()
    allowed = os.environ.get("TUNEYARD_GPU_IDS")
    if allowed:
        wanted = {int(part) for part in allowed.split(",") if part.strip()}
        gpus = [gpu for gpu in gpus if gpu.index in wanted]
    return gpus


class GpuPool:
    """The worker's GPUs, lent whole to the jobs it runs at once; a job waits until enough are free."""

    def __init__(self, indices: list[int]) -> None:
        self.indices = list(indices)
        self._free = list(indices)
        self._changed = threading.Condition()

    def acquire(self, count: int, timeout: float | None = None) -> list[int] | None:
        """Take ``count`` free GPUs, waiting up to ``timeout`` seconds for running jobs to give
        theirs back; None if they did not.

        Raises ValueError when the worker has fewer than ``count`` in all.
        """
        if count > len(self.indices):
            raise ValueError(f"the job needs {count} GPU(s); this worker has {len(self.indices)}")
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._free) >= count, timeout=timeout):
                return None
            taken, self._free = self._free[:count], self._free[count:]
            return taken

    def release(self, taken: list[int]) -> None:
        with self._changed:
            self._free = sorted(self._free + taken)
            self._changed.notify_all()


def visible_devices(indices: list[int]) -> str:
    """CUDA_VISIBLE_DEVICES for a job holding ``indices`` ("" hides every GPU from a CPU job)."""
    return ",".join(str(index) for index in indices)
