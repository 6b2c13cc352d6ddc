"""Does pruning pay? The same sweep with a median pruner and without, side by side.

Both sweeps use the same tiny model, data, search space, TPE seed and trial
budget, and train every trial with the engine's own ``train`` (in this process,
one trial at a time, so the order is the same on every run). A pruned trial
stops at the step the pruner says. Compute is counted in optimizer steps.

Reported: the steps each sweep spent until its best-so-far came within 1% of
the best loss either sweep found (target: with pruning at most 0.5x), and each
sweep's best loss (target: with pruning at most 1.02x of without).

Run from the repository root: .venv/bin/python bench/sweep_pruning.py [--trials 24]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

import django  # noqa: E402
import optuna  # noqa: E402

django.setup()  # for the demo dataset's rows only; no database is touched

from controlplane.site.demo import demo_instruction_rows  # noqa: E402
from workers.engine.data import InstructionRow  # noqa: E402
from workers.spec import JobSpec  # noqa: E402
from workers.tinymodel import build_tiny_model  # noqa: E402

TAIL = 5  # the objective: the mean loss of the last TAIL steps


class Stop(Exception):
    """Raised from the step callback when the pruner says so."""


def sweep(
    *, pruner: optuna.pruners.BasePruner, trials: int, steps: int, model: Path, rows, workdir: Path
) -> dict:
    from workers.engine.train import train

    study = optuna.create_study(
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=0), pruner=pruner
    )
    spent, history = 0, []  # history: (steps spent so far, best value so far) after each trial
    for number in range(trials):
        trial = study.ask()
        spec = JobSpec(
            job_id=1 + number, attempt=1, project="bench", base_model_uri=str(model), dataset_uris=["-"],
            mlflow_experiment="bench",
            config={
                "method": {"name": "lora", "r": trial.suggest_categorical("r", [4, 8, 16])},
                "hyperparameters": {
                    "learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-1, log=True),
                    "max_steps": steps, "batch_size": 8, "max_seq_length": 64, "seed": 0,
                    "checkpoint_every_steps": None,
                },
            },
        )  # fmt: skip
        losses: list[float] = []

        def on_step(step: int, total: int, metrics, trial=trial, losses=losses) -> None:  # noqa: ANN001
            losses.append(metrics["loss"])
            trial.report(metrics["loss"], step)
            if trial.should_prune():
                raise Stop

        try:
            train(spec, model, rows, workdir / f"trial-{number}", on_step)
        except Stop:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, sum(losses[-TAIL:]) / TAIL)
        spent += len(losses)
        best = study.best_value if any(t.state.name == "COMPLETE" for t in study.trials) else float("inf")
        history.append((spent, best))
    pruned = sum(t.state.name == "PRUNED" for t in study.trials)
    return {"steps": spent, "best": study.best_value, "pruned_trials": pruned, "history": history}


def steps_to_within(history: list[tuple[int, float]], target: float) -> int:
    return next(spent for spent, best in history if best <= target)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="tuneyard-pruning-"))
    raw = demo_instruction_rows(256)
    model = build_tiny_model(tmp / "model", [f"{r['instruction']} {r['input']} {r['output']}" for r in raw])
    rows = [InstructionRow.model_validate(row) for row in raw]

    started = time.monotonic()
    without = sweep(pruner=optuna.pruners.NopPruner(), trials=args.trials, steps=args.steps, model=model,
                    rows=rows, workdir=tmp / "without")  # fmt: skip
    median = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=args.steps // 4)
    with_pruning = sweep(pruner=median, trials=args.trials, steps=args.steps, model=model, rows=rows,
                         workdir=tmp / "with")  # fmt: skip
    best = min(without["best"], with_pruning["best"])
    target = best * 1.01
    result = {
        "trials": args.trials,
        "steps_per_trial": args.steps,
        "best_loss_without": round(without["best"], 5),
        "best_loss_with_pruning": round(with_pruning["best"], 5),
        "best_ratio_with_vs_without": round(with_pruning["best"] / without["best"], 4),
        "steps_without": without["steps"],
        "steps_with_pruning": with_pruning["steps"],
        "pruned_trials": with_pruning["pruned_trials"],
        "steps_to_within_1pct_without": steps_to_within(without["history"], target)
        if without["best"] <= target
        else None,
        "steps_to_within_1pct_with_pruning": steps_to_within(with_pruning["history"], target)
        if with_pruning["best"] <= target
        else None,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    a, b = result["steps_to_within_1pct_with_pruning"], result["steps_to_within_1pct_without"]
    result["compute_ratio_to_within_1pct"] = round(a / b, 3) if a and b else None
    result["total_compute_ratio"] = round(with_pruning["steps"] / without["steps"], 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
