"""Near-duplicate removal of 200k instruction rows: it finishes, how fast, and what it finds.

Generates rows of varied text with a known share of planted duplicates
(exact copies, and copies with one word changed at the end), ingests them,
then runs the same dedup a dataset version gets from the control worker.

Run from the repository root: .venv/bin/python -m bench.near_dedup [--rows 200000]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controlplane.datasets.ingest import curation  # noqa: E402
from controlplane.datasets.ingest.pipeline import ingest  # noqa: E402
from controlplane.datasets.ingest.schemas import DatasetSchema  # noqa: E402


def generate(path: Path, rows: int, duplicate_share: float, seed: int = 11) -> dict[str, int]:
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(20_000)]
    originals: list[dict[str, str]] = []
    planted = {"exact": 0, "near": 0}
    with path.open("w") as out:
        for _ in range(rows):
            if originals and rng.random() < duplicate_share:
                source = rng.choice(originals)
                if rng.random() < 0.5:
                    row, kind = dict(source), "exact"
                else:
                    words = source["output"].split()
                    words[-1] = "changed"
                    row, kind = {**source, "output": " ".join(words)}, "near"
                planted[kind] += 1
            else:
                row = {
                    "instruction": " ".join(rng.choices(vocabulary, k=rng.randint(8, 25))),
                    "output": " ".join(rng.choices(vocabulary, k=rng.randint(30, 90))),
                }
                originals.append(row)
            out.write(json.dumps(row) + "\n")
    return planted


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--duplicates", type=float, default=0.1)
    parser.add_argument("--threshold", type=float, default=0.8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tuneyard-dedup-") as tmp:
        source = Path(tmp) / "rows.jsonl"
        planted = generate(source, args.rows, args.duplicates)
        stored = ingest(source, filename=source.name, output=Path(tmp) / "rows.parquet")
        started = time.perf_counter()
        outcome = curation.dedup(
            stored.parquet_path,
            Path(tmp) / "kept.parquet",
            schema=DatasetSchema.INSTRUCTION,
            threshold=args.threshold,
        )
        seconds = time.perf_counter() - started
        print(
            json.dumps(
                {
                    "rows": args.rows,
                    "planted_exact": planted["exact"],
                    "planted_near": planted["near"],
                    "removed_exact": outcome.removed_exact,
                    "removed_near": outcome.removed_near,
                    "kept": outcome.kept.row_count,
                    "seconds": round(seconds, 1),
                    "rows_per_second": round(args.rows / seconds),
                    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                }
            )
        )


if __name__ == "__main__":
    main()
