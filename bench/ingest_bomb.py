"""Peak memory of ingesting compression bombs, each in a fresh process, as the control worker reads them.

Builds each bomb as gzip members laid end to end (one member of 100 MB of
one byte compresses to about 100 KB, so 10 MB of them expand to about
10 GB), then ingests it in a child process through ``ingest`` with the
bounds the control worker reads uploads within, and reports whether it was
refused, why, how long it took and the peak RSS (``ru_maxrss``) of the
process that ingested it, so the parent's memory never counts.

The bombs: ``zeros`` (one endless line of NUL bytes), ``rows`` (valid JSONL
rows, so only the expansion ratio stops it), ``csv_field`` (one endless CSV
field) and ``json_element`` (one endless element of a JSON array).

Run from the repository root: .venv/bin/python -m bench.ingest_bomb [--megabytes 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MEMBER_BYTES = 100 * 1024**2
# What each bomb starts with, what it repeats without end, and the name it is uploaded under.
BOMBS: dict[str, tuple[bytes, bytes, str]] = {
    "zeros": (b"", b"\0", "bomb.jsonl.gz"),
    "rows": (b"", b'{"text": "a"}\n', "bomb.jsonl.gz"),
    "csv_field": (b'text\n"', b"a", "bomb.csv.gz"),
    "json_element": (b'[{"text": "', b"a", "bomb.json.gz"),
}


def bomb_write(path: Path, kind: str, compressed_bytes: int) -> int:
    """Write the bomb of that kind, about ``compressed_bytes`` long; returns the bytes it expands to."""
    head, unit, _ = BOMBS[kind]
    filler = unit * (MEMBER_BYTES // len(unit))
    member = gzip.compress(filler, compresslevel=6)
    expanded = 0
    with path.open("wb") as out:
        out.write(gzip.compress(head + filler, compresslevel=6))
        expanded += len(head) + len(filler)
        while out.tell() + len(member) <= compressed_bytes:
            out.write(member)
            expanded += len(filler)
    return expanded


def ingest_in_child(path: Path, filename: str, limits: dict | None = None) -> dict:
    """Ingest the file in a fresh process; what it reports: refused (the message or None), seconds,
    peak_rss_mb."""
    with tempfile.TemporaryDirectory(prefix="tuneyard-bomb-") as workdir:
        command = [sys.executable, "-m", "bench.ingest_bomb", "--child", str(path), filename, workdir]
        command += ["--limits", json.dumps(limits or {})]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the ingest process failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(path: Path, filename: str, workdir: Path, limits: dict) -> dict:
    """Ingest in a process forked from this one, and report that process's peak RSS.

    Linux keeps a process's peak RSS across exec, and this process was started
    by one that may be large (a test runner): its own ru_maxrss would report
    that one's size. A process forked now, while this one is small, starts
    afresh.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        with os.fdopen(write_end, "w") as out:
            out.write(json.dumps(_ingest_measured(path, filename, workdir, limits)))
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        reported = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not reported:
        raise RuntimeError(f"the ingest process ended without a report (status {status})")
    return json.loads(reported)


def _ingest_measured(path: Path, filename: str, workdir: Path, limits: dict) -> dict:
    from controlplane.datasets.ingest.pipeline import IngestOptions, ingest
    from controlplane.datasets.ingest.problems import IngestRefused
    from controlplane.datasets.ingest.sources import Limits

    options = IngestOptions(limits=Limits(**limits))
    start = time.perf_counter()
    refused = None
    try:
        ingest(path, filename=filename, output=workdir / "data.parquet", workdir=workdir, options=options)
    except IngestRefused as exc:
        refused = exc.message
    return {
        "refused": refused,
        "seconds": round(time.perf_counter() - start, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),  # KB on Linux
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=float, default=10.0, help="compressed size of each bomb")
    parser.add_argument("--child", nargs=3, metavar=("PATH", "FILENAME", "WORKDIR"), help=argparse.SUPPRESS)
    parser.add_argument("--limits", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        path, filename, workdir = args.child
        print(json.dumps(_child(Path(path), filename, Path(workdir), json.loads(args.limits))))
        return

    from controlplane.datasets.ingest.sources import Limits

    limits = dataclasses.asdict(Limits())
    print(f"bounds: {limits}")
    with tempfile.TemporaryDirectory(prefix="tuneyard-bench-") as tmp:
        for kind, (_, _, filename) in BOMBS.items():
            path = Path(tmp) / filename
            expanded = bomb_write(path, kind, int(args.megabytes * 1024**2))
            outcome = ingest_in_child(path, filename, limits)
            print(
                f"{kind:13s} {path.stat().st_size / 1024**2:5.1f} MB -> {expanded / 1024**3:5.1f} GB  "
                f"{outcome['seconds']:5.2f} s  peak RSS {outcome['peak_rss_mb']:4d} MB  "
                f"refused: {outcome['refused']}"
            )
            path.unlink()


if __name__ == "__main__":
    main()
