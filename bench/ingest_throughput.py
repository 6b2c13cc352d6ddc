"""Dataset ingest throughput and memory, side by side with datasets.load_dataset("json").

Generates a JSONL instruction file of the given size, then, each in a fresh
process so neither inherits the other's memory: Tuneyard's ingest (validate
every row, normalize to Parquet, hash, stats) and Hugging Face's
``load_dataset("json")`` (parse into its Arrow cache). Each process reports its
own wall time and peak RSS. The generated file and both outputs are deleted
at the end.

Run from the repository root: .venv/bin/python -m bench.ingest_throughput [--gigabytes 1] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = (
    "the model learns to answer questions about data with care and precision while keeping each "
    "response short clear and useful for the person who asked it in the first place today"
).split()


def generate(path: Path, size_bytes: int, seed: int = 7) -> int:
    """A JSONL instruction file of about ``size_bytes``: varied lengths, a third with an input."""
    rng = random.Random(seed)
    rows = 0
    written = 0
    with path.open("w", encoding="utf-8") as out:
        while written < size_bytes:
            lines = []
            for _ in range(1000):
                row = {
                    "instruction": " ".join(rng.choices(WORDS, k=rng.randint(5, 40))),
                    "input": " ".join(rng.choices(WORDS, k=rng.randint(0, 30)))
                    if rng.random() < 0.33
                    else "",
                    "output": " ".join(rng.choices(WORDS, k=rng.randint(10, 120))),
                }
                lines.append(json.dumps(row))
            chunk = "\n".join(lines) + "\n"
            out.write(chunk)
            written += len(chunk)
            rows += len(lines)
    return rows


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def run_tuneyard(path: Path, workdir: Path) -> dict:
    from controlplane.datasets.ingest.pipeline import ingest

    start = time.perf_counter()
    result = ingest(path, filename=path.name, output=workdir / "data.parquet", workdir=workdir)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rows": result.row_count,
        "peak_rss_mb": _peak_rss_mb(),
        "sha256": result.sha256,
    }


def run_hf(path: Path, workdir: Path) -> dict:
    import datasets

    datasets.disable_progress_bars()
    start = time.perf_counter()
    dataset = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(workdir))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": dataset.num_rows, "peak_rss_mb": _peak_rss_mb()}


def _in_child(which: str, path: Path, workdir: Path) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "bench.ingest_throughput", "--child", which, str(path), str(workdir)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{which} failed:\n{done.stderr[-3000:]}")
    shutil.rmtree(workdir, ignore_errors=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--child", nargs=3, metavar=("WHICH", "PATH", "WORKDIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        which, path, workdir = args.child
        runner = run_tuneyard if which == "tuneyard" else run_hf
        print(json.dumps(runner(Path(path), Path(workdir))))
        return

    with tempfile.TemporaryDirectory(prefix="tuneyard-bench-") as tmp:
        data = Path(tmp) / "instructions.jsonl"
        started = time.perf_counter()
        rows = generate(data, int(args.gigabytes * 1024**3))
        size_mb = data.stat().st_size / 1024**2
        print(f"generated {rows} rows, {size_mb:.0f} MB in {time.perf_counter() - started:.0f} s")
        results: dict[str, list[dict]] = {"tuneyard": [], "hf": []}
        for round_number in range(args.rounds):
            # Alternated, so neither always runs with the warmer page cache.
            order = ["hf", "tuneyard"] if round_number % 2 == 0 else ["tuneyard", "hf"]
            for which in order:
                outcome = _in_child(which, data, Path(tmp) / f"{which}-{round_number}")
                results[which].append(outcome)
                print(
                    f"round {round_number + 1} {which:9s} {outcome['seconds']:6.1f} s "
                    f"{size_mb / outcome['seconds']:6.1f} MB/s  peak RSS {outcome['peak_rss_mb']:.0f} MB"
                )
        best = {which: min(r["seconds"] for r in runs) for which, runs in results.items()}
        assert results["tuneyard"][0]["rows"] == results["hf"][0]["rows"] == rows
        print(
            json.dumps(
                {
                    "file_mb": round(size_mb),
                    "rows": rows,
                    "tuneyard_mb_per_s": round(size_mb / best["tuneyard"], 1),
                    "load_dataset_mb_per_s": round(size_mb / best["hf"], 1),
                    "throughput_ratio": round(best["hf"] / best["tuneyard"], 2),
                    "tuneyard_peak_rss_mb": round(max(r["peak_rss_mb"] for r in results["tuneyard"])),
                    "load_dataset_peak_rss_mb": round(max(r["peak_rss_mb"] for r in results["hf"])),
                }
            )
        )


if __name__ == "__main__":
    main()
