"""The wheels the GPU check host lacks, for its Python 3.12 on x86-64, downloaded into ``.whl/``.

``make gpu-wheels`` runs this; ``infra/gpu_check.sh`` installs them there,
offline. The host has torch 2.11 (CUDA 13.0), transformers 5.17, peft,
accelerate, pyarrow, safetensors, sacrebleu, numpy and pytest, and no network;
what travels with the repository may be 64 MiB in all. What goes:

* the engine's contract: pydantic, pydantic-core (built for CPython 3.12),
  annotated-types, typing-inspection and typing-extensions (pydantic needs a
  newer one than the host may have);
* ROUGE for the evaluation suite: rouge-score (PyPI has its source only, so
  its wheel is built here; it is pure Python), nltk and defusedxml;
* transformers and peft at the project's pins: the engine passes
  ``TrainingArguments`` options that transformers 5.17 does not have
  (``activation_checkpointing``), and the host's peft is not the one tested here;
* bitsandbytes, for QLoRA, with only the CUDA library the host's torch loads:
  the whole wheel is 41 MiB, nearly all of it builds for other CUDA, ROCm and
  XPU versions;
* liger-kernel, for the check's Liger row.

Versions are those of this virtualenv where the project installs the package
(the host then runs what CI tests), else the pins below. MLflow does not
travel: the check runs the engine with tracking off.

    .venv/bin/python infra/gpu_wheels.py [--dest .whl] [--cuda 130]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024**2

# What the working tree may carry to the device (64 MiB), less the repository and a margin.
WHEELS_LIMIT_BYTES = 56 * MIB

# Installed here by pyproject.toml: the same versions travel.
FROM_THIS_ENVIRONMENT = (
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",
    "transformers",
    "peft",
    "nltk",
    "defusedxml",
)
# Not installed here (no GPU): pinned to releases whose wheels carry CUDA 13 builds.
PINNED = {"bitsandbytes": "0.50.2", "liger-kernel": "0.8.5"}
# Source-only on PyPI; pure Python, so a wheel built here installs anywhere.
BUILT_HERE = ("rouge-score",)

PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


def requirement(name: str) -> str:
    if name in PINNED:
        return f"{name}=={PINNED[name]}"
    try:
        return f"{name}=={version(name)}"
    except PackageNotFoundError:
        raise SystemExit(
            f"{name} is not installed here: run `make gpu-wheels` (it installs .venv first)"
        ) from None


def download(requirements: Sequence[str], dest: Path) -> None:
    """Wheels only, for CPython 3.12 on manylinux x86-64, without their dependencies (named above)."""
    platforms = [option for platform in PLATFORMS for option in ("--platform", platform)]
    subprocess.run(
        [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
            "--python-version", "3.12", "--implementation", "cp", *platforms, "--dest", str(dest),
            *requirements,
        ],
        check=True,
    )  # fmt: skip


def build(requirements: Sequence[str], dest: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(dest),
            *requirements,
        ],
        check=True,
    )


def wheel_slim(wheel: Path, keep: set[str]) -> int:
    """Drop every ``*.so`` of the wheel's top package not named in ``keep``; returns the bytes saved.

    The wheel's RECORD loses the dropped files' lines, so pip installs the rest
    as a whole wheel; the file name stays (nothing else about it changed).
    """
    before = wheel.stat().st_size
    slim = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as target:
        dropped = {
            name
            for name in source.namelist()
            if name.endswith(".so") and name.count("/") == 1 and name.rsplit("/", 1)[1] not in keep
        }
        for info in source.infolist():
            if info.filename in dropped:
                continue
            data = source.read(info.filename)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(line for line in lines if line.split(",", 1)[0] not in dropped).encode()
            target.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    slim.replace(wheel)
    return before - wheel.stat().st_size


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=ROOT / ".whl", help="git ignores the default, .whl/")
    parser.add_argument(
        "--cuda", default="130", help="the host torch's CUDA version, as bitsandbytes names it"
    )
    args = parser.parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)
    for old in args.dest.glob("*.whl"):
        old.unlink()
    download([requirement(name) for name in (*FROM_THIS_ENVIRONMENT, *PINNED)], args.dest)
    build([requirement(name) for name in BUILT_HERE], args.dest)
    (bitsandbytes,) = args.dest.glob("bitsandbytes-*.whl")
    saved = wheel_slim(bitsandbytes, {f"libbitsandbytes_cuda{args.cuda}.so", "libbitsandbytes_cpu.so"})
    wheels = sorted(args.dest.glob("*.whl"))
    total = sum(wheel.stat().st_size for wheel in wheels)
    for wheel in wheels:
        print(f"{wheel.stat().st_size / MIB:8.2f} MiB  {wheel.name}")
    print(f"{total / MIB:8.2f} MiB  in all, in {args.dest} (bitsandbytes slimmed by {saved / MIB:.1f} MiB)")
    if total > WHEELS_LIMIT_BYTES:
        print(f"over the {WHEELS_LIMIT_BYTES / MIB:.0f} MiB the device may carry beside the repository")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
