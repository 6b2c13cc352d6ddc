"""The GPU check's wheels: bitsandbytes slimmed to the one CUDA build the host loads still installs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from infra.gpu_wheels import wheel_slim

FILES = {
    "fake/__init__.py": b"",
    "fake/libfake_cpu.so": b"cpu" * 10,
    "fake/libfake_cuda118.so": b"old" * 1000,
    "fake/libfake_cuda130.so": b"new" * 10,
    "fake/nested/kept.so": b"nested" * 10,
    "fake-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: fake\nVersion: 1.0\n",
    "fake-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: py3-none-any\n",
}


def _wheel(path: Path) -> Path:
    record = "".join(f"{name},,\n" for name in FILES) + "fake-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in FILES.items():
            wheel.writestr(name, data)
        wheel.writestr("fake-1.0.dist-info/RECORD", record)
    return path


def test_slimming_keeps_the_named_libraries_and_drops_the_others_from_the_record(tmp_path: Path):
    wheel = _wheel(tmp_path / "fake-1.0-py3-none-any.whl")
    saved = wheel_slim(wheel, {"libfake_cpu.so", "libfake_cuda130.so"})
    with zipfile.ZipFile(wheel) as slim:
        names = set(slim.namelist())
        record = slim.read("fake-1.0.dist-info/RECORD").decode()
    assert "fake/libfake_cuda118.so" not in names and "libfake_cuda118" not in record
    assert {"fake/libfake_cpu.so", "fake/libfake_cuda130.so", "fake/nested/kept.so"} <= names
    assert saved > 0


def test_pip_installs_the_slimmed_wheel_offline(tmp_path: Path):
    wheel = _wheel(tmp_path / "fake-1.0-py3-none-any.whl")
    wheel_slim(wheel, {"libfake_cuda130.so"})
    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps"]
    subprocess.run([*install, "--target", str(target), str(wheel)], check=True)
    assert (target / "fake" / "libfake_cuda130.so").is_file()
    assert not (target / "fake" / "libfake_cuda118.so").exists()
