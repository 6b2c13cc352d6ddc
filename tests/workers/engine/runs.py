"""Running the engine as a worker does: a subprocess on a spec file, its events read from stdout.

Shared by the engine's tests (training, evaluation, several processes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from workers.engine.protocol import parse

ROOT = Path(__file__).resolve().parents[3]
TIMEOUT_S = 180

# Repetitive on purpose: a tiny model can visibly learn it in 30 steps.
ROWS: list[dict[str, str]] = [
    {"instruction": "Say hello.", "output": "Hello! How can I help you today?"},
    {"instruction": "Name a primary colour.", "output": "Red is a primary colour."},
    {"instruction": "Translate to French.", "input": "Thank you", "output": "Merci."},
    {"instruction": "Add two and three.", "output": "Two plus three is five."},
] * 4


CHATS: list[dict[str, Any]] = [
    {
        "messages": [
            {"role": "user", "content": row["instruction"]},
            {"role": "assistant", "content": row["output"]},
        ]
    }
    for row in ROWS
]
PREFERENCES: list[dict[str, str]] = [
    {"prompt": row["instruction"], "chosen": row["output"], "rejected": "No."} for row in ROWS
]


@dataclass(frozen=True)
class EngineRun:
    returncode: int
    stdout: str
    stderr: str
    tracking_uri: str
    workdir: Path

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        parsed = [parse(line) for line in self.stdout.splitlines()]
        return [e for e in parsed if e is not None and (kind is None or e["event"] == kind)]

    def losses(self) -> list[float]:
        return [e["metrics"]["loss"] for e in self.events("progress")]


def spec_make(job_id: int, model: Path, method: dict[str, str], *, learning_rate: float) -> dict[str, Any]:
    """A spec without its dataset: ``engine_start`` writes the rows and fills that in."""
    return {
        "job_id": job_id,
        "attempt": 1,
        "project": "demo",
        "base_model_uri": str(model),
        "mlflow_experiment": "tests/engine",
        "config": {
            "method": method,
            "hyperparameters": {
                "learning_rate": learning_rate,
                "max_steps": 30,
                "batch_size": 4,
                "seed": 0,
            },
        },
    }


def _schema_of(row: dict[str, Any]) -> str:
    for schema, columns in (
        ("instruction", {"instruction", "output"}),
        ("chat", {"messages"}),
        ("preference", {"prompt", "chosen", "rejected"}),
        ("multiple_choice", {"question", "choices", "answer"}),
    ):
        if columns <= set(row):
            return schema
    return "text"


def engine_start(
    run_dir: Path, spec: dict[str, Any], rows: list[str] | list[dict[str, Any]], store: Path
) -> subprocess.Popen[bytes]:
    """JSON lines are written as JSONL, row dicts as Parquet (as the control plane stores datasets)."""
    run_dir.mkdir(parents=True)
    if rows and isinstance(rows[0], dict):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), run_dir / "train.parquet")
        spec["dataset_uris"] = [str(run_dir / "train.parquet")]
        # The schema the control plane would have stored the version with; the engine reads by it.
        spec.setdefault("dataset_format", _schema_of(rows[0]))
    else:
        (run_dir / "train.jsonl").write_text("\n".join(str(row) for row in rows) + "\n")
        spec["dataset_uris"] = [str(run_dir / "train.jsonl")]
    (run_dir / "spec.json").write_text(json.dumps(spec))
    # A copy of one store per run: concurrent writers on one SQLite file can hit
    # "database is locked", and creating MLflow's schema costs seconds each time.
    shutil.copy(store, run_dir / "mlflow.db")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri_of(run_dir),
        "PYTHONPATH": str(ROOT),
        # Several runs share few cores: OpenMP threads spinning against each
        # other make a 1 s training take 10 s.
        "OMP_NUM_THREADS": "1",
    }
    # Files, not pipes: several runs go at once, and a full pipe nobody reads would stall one.
    # cwd is the run's own directory because MLflow puts a SQLite store's artifacts in ./mlruns.
    return subprocess.Popen(
        [sys.executable, "-m", "workers.engine", "spec.json", "work"],
        cwd=run_dir,
        env=env,
        stdout=(run_dir / "stdout.txt").open("wb"),
        stderr=(run_dir / "stderr.txt").open("wb"),
    )


def engine_finish(process: subprocess.Popen[bytes], run_dir: Path) -> EngineRun:
    returncode = process.wait(timeout=TIMEOUT_S)
    return EngineRun(
        returncode=returncode,
        stdout=(run_dir / "stdout.txt").read_text(),
        stderr=(run_dir / "stderr.txt").read_text(),
        tracking_uri=tracking_uri_of(run_dir),
        workdir=run_dir / "work",
    )


def tracking_uri_of(run_dir: Path) -> str:
    return f"sqlite:///{run_dir / 'mlflow.db'}"


def empty_store(path: Path) -> Path:
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()  # creates the schema
    return path
