"""Engine training throughput and tracking overhead, side by side on one machine.

1. Throughput: the engine (``workers.engine.train.train``, packing on by
   default) against a plain ``transformers.Trainer`` with the stock padding
   collator for labelled examples (``DataCollatorForSeq2Seq``, padding to the
   longest example), on the same Llama-style model of a few million parameters,
   the same examples and the same hyperparameters, one epoch each. Both sides
   train the same objective, the engine's default: the loss on the completion
   only (the response's tokens; the prompt's labels are -100), on examples made
   by the engine's own ``sft_examples``. The figure is real (non-padding)
   tokens per CPU second of the training call, counted once from those examples
   for both sides. Both trained models are scored the same way on the same
   held-out completion tokens; the bench fails when the two losses differ by
   more than 2%, since then the two sides did not do the same work.
2. Tracking overhead: the engine logging every step's metrics to a local MLflow
   server (started here, as a worker would talk to one). Measured directly: the
   time the training thread spends in logging calls plus the CPU the sending
   thread uses, against the CPU of a run that logs nowhere. The A/B difference
   of whole runs (tracked against untracked) is reported beside it; on a shared
   machine its noise is larger than the overhead.

CPU seconds, with one torch thread, rather than wall seconds: this bench runs
on shared machines, where another process's burst moves wall time by tens of
percent and CPU time much less. Wall seconds are reported beside them. Runs
alternate (A B A B) so that neither side always gets the quieter machine;
throughput compares each side's best run, tracking the medians. The dataset is
skewed as real instruction data is: many short examples, a few long ones.
About four minutes on two busy cores.

Run from the repository root: .venv/bin/python -m bench.engine_throughput [--rounds 2] [--rows 192]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from infra import processes  # noqa: E402

WORDS = (
    "the model learns to answer questions about data with care and precision while keeping each "
    "response short clear and useful for the person who asked it in the first place today"
).split()
MAX_SEQ_LENGTH = 384
BATCH_SIZE = 8
SEED = 0
# The objective of both sides (and of the held-out score): the engine's default.
COMPLETION_ONLY_LOSS = True
LOSS_TOLERANCE_PERCENT = 2.0


def skewed_rows(count: int, seed: int) -> list[Any]:
    """Instruction rows: about 85% short (a dozen words), the rest long (up to a few hundred)."""
    from workers.engine.data import InstructionRow

    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        long = rng.random() < 0.15
        words = rng.randint(80, 300) if long else rng.randint(4, 20)
        rows.append(
            InstructionRow(
                instruction=" ".join(rng.choices(WORDS, k=rng.randint(3, 10))),
                output=" ".join(rng.choices(WORDS, k=words)),
            )
        )
    return rows


def build_model(out_dir: Path) -> Path:
    """The tiny model's tokenizer with a wider, deeper Llama: about 1.8M parameters."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from workers.tinymodel import build_tiny_model

    build_tiny_model(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=192,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(SEED)
    LlamaForCausalLM(config).save_pretrained(out_dir)
    return out_dir


def engine_spec(model_dir: Path) -> Any:
    from workers.spec import JobSpec

    return JobSpec.model_validate(
        {
            "job_id": 1,
            "attempt": 1,
            "project": "bench",
            "base_model_uri": str(model_dir),
            "dataset_uris": ["generated"],
            "mlflow_experiment": "bench/engine-throughput",
            "config": {
                "method": {"name": "full"},
                "hyperparameters": {
                    "learning_rate": 1e-3,
                    "epochs": 1,
                    "batch_size": BATCH_SIZE,
                    "max_seq_length": MAX_SEQ_LENGTH,
                    "seed": SEED,
                    "checkpoint_every_steps": None,
                    "completion_only_loss": COMPLETION_ONLY_LOSS,
                },
            },
        }
    )


def run_engine(
    model_dir: Path, rows: list[Any], workdir: Path, on_step: Callable[[int, int, Mapping[str, float]], None]
) -> dict[str, Any]:
    from workers.engine.train import train

    with _measured() as measured:
        trained = train(engine_spec(model_dir), model_dir, rows, workdir, on_step)
    return {**measured, "seconds": trained.metrics["train_runtime"], "model": trained.path}


@contextlib.contextmanager
def _measured() -> Any:
    """CPU and wall seconds of the block, the Trainer's printed logs kept off the bench's output."""
    measured: dict[str, float] = {}
    cpu, wall = time.process_time(), time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        yield measured
    measured["cpu_seconds"] = time.process_time() - cpu
    measured["wall_seconds"] = time.perf_counter() - wall


def run_plain_trainer(model_dir: Path, rows: list[Any], workdir: Path) -> dict[str, Any]:
    """What a team would write without Tuneyard: the Trainer with a stock padding collator."""
    with _measured() as measured:
        output = _plain_trainer(model_dir, rows, workdir)
    return {**measured, "seconds": output.metrics["train_runtime"], "model": workdir / "model"}


def _plain_trainer(model_dir: Path, rows: list[Any], workdir: Path) -> Any:
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    args = TrainingArguments(
        output_dir=str(workdir / "trainer"),
        per_device_train_batch_size=BATCH_SIZE,
        learning_rate=1e-3,
        num_train_epochs=1,
        seed=SEED,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=examples(rows, tokenizer),
        # Pads the labels with -100, so the prompt's masked labels stay masked and padding is ignored.
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding="longest"),
        processing_class=tokenizer,
    )
    output = trainer.train()
    model.save_pretrained(workdir / "model")
    return output


def examples(rows: list[Any], tokenizer: Any) -> list[dict[str, list[int]]]:
    """``input_ids`` and ``labels`` exactly as the engine makes them (template, cut, eos, prompt masked)."""
    from workers.engine.sft import sft_examples

    return sft_examples(rows, tokenizer, MAX_SEQ_LENGTH, completion_only_loss=COMPLETION_ONLY_LOSS)


def held_out_loss(model_dir: Path, tokenizer_dir: Path, rows: list[Any]) -> float:
    """Mean loss per learned token (the trained objective's) over the held-out rows, padding ignored."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workers.engine.train import CausalLMCollator

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    held_out = examples(rows, tokenizer)
    collate = CausalLMCollator(tokenizer.pad_token_id)
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(held_out), BATCH_SIZE):
            batch = collate(held_out[start : start + BATCH_SIZE])
            predicted = int((batch["labels"][:, 1:] != -100).sum())
            total += float(model(**batch).loss) * predicted
            count += predicted
    return total / count


class MlflowServer:
    """A local tracking server on SQLite, as ``infra.processes`` starts one for a laptop."""

    def __init__(self, workdir: Path) -> None:
        port = processes.free_port()
        (workdir / "artifacts").mkdir(parents=True)
        self.log = workdir / "mlflow.log"
        self.process = subprocess.Popen(
            processes.mlflow_command(
                port=port,
                backend_store_uri=f"sqlite:///{workdir / 'mlflow.db'}",
                artifacts_destination=str(workdir / "artifacts"),
            ),
            env={**os.environ, **processes.MLFLOW_ENV},
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{port}"
        processes.wait_for_http(f"{self.url}/health", timeout=120, process=self.process)

    def stop(self) -> None:
        os.killpg(self.process.pid, 15)
        self.process.wait(timeout=30)


def run_engine_tracked(model_dir: Path, rows: list[Any], workdir: Path, step: int) -> dict[str, Any]:
    """The engine logging every step as ``workers.engine.job`` does, into a run of its own."""
    from workers.tracking import RunLogger

    in_calls = 0.0
    sending_cpu: list[float] = []

    def on_step(step: int, total: int, metrics: Mapping[str, float]) -> None:
        nonlocal in_calls
        started = time.perf_counter()
        run.log_metrics(metrics, step)
        in_calls += time.perf_counter() - started

    with RunLogger.start(experiment="bench/engine-throughput", run_name=f"tracked-{step}", tags={}) as run:
        log_batch = run.client.log_batch

        def timed_log_batch(*args: Any, **kwargs: Any) -> Any:
            # CPU of the thread that sends (the background one, or the closing one at the end).
            started = time.thread_time()
            try:
                return log_batch(*args, **kwargs)
            finally:
                sending_cpu.append(time.thread_time() - started)

        run.client.log_batch = timed_log_batch  # type: ignore[method-assign]
        outcome = run_engine(model_dir, rows, workdir, on_step)
        started = time.perf_counter()
    # What the run's end adds (the last batch of metrics, the status): after training, but reported.
    outcome["end_seconds"] = time.perf_counter() - started
    outcome["logging_call_seconds"] = in_calls
    outcome["sending_cpu_seconds"] = sum(sending_cpu)
    outcome["batches_sent"] = len(sending_cpu)
    outcome["points"] = len(run.client.get_metric_history(run.run_id, "loss"))
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tracking-rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=192)
    parser.add_argument("--held-out", type=int, default=64)
    parser.add_argument("--report", type=Path, default=Path(tempfile.gettempdir()) / "engine_throughput.json")
    args = parser.parse_args()

    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="tuneyard-bench-engine-"))
    server = None
    try:
        model_dir = build_model(tmp / "model")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        train_rows = skewed_rows(args.rows, seed=1)
        eval_rows = skewed_rows(args.held_out, seed=2)
        # Both sides train on these examples: the real tokens (what tokens/s counts) are the same.
        train_examples = examples(train_rows, tokenizer)
        lengths = [len(example["input_ids"]) for example in train_examples]
        real_tokens = sum(lengths)
        learned_tokens = sum(label != -100 for example in train_examples for label in example["labels"])
        padded_tokens = sum(
            len(batch) * max(batch) for batch in _batches_as_sampled(lengths, BATCH_SIZE, SEED)
        )
        objective = "completion only" if COMPLETION_ONLY_LOSS else "every token"
        print(
            f"{len(train_examples)} training examples, {real_tokens} tokens ({learned_tokens} learned: "
            f"loss on the {objective}, both sides); lengths {min(lengths)}..{max(lengths)}, "
            f"median {sorted(lengths)[len(lengths) // 2]}; padded batches would hold {padded_tokens} tokens"
        )

        throughput: dict[str, list[dict[str, Any]]] = {"engine": [], "trainer": []}
        for round_number in range(args.rounds):
            order = ["trainer", "engine"] if round_number % 2 == 0 else ["engine", "trainer"]
            for which in order:
                workdir = tmp / f"{which}-{round_number}"
                if which == "engine":
                    outcome = run_engine(model_dir, train_rows, workdir, lambda *_: None)
                else:
                    outcome = run_plain_trainer(model_dir, train_rows, workdir)
                outcome["tokens_per_cpu_second"] = real_tokens / outcome["cpu_seconds"]
                outcome["tokens_per_second"] = real_tokens / outcome["seconds"]
                if round_number == 0:
                    outcome["held_out_loss"] = held_out_loss(outcome["model"], model_dir, eval_rows)
                outcome["model"] = str(outcome["model"])
                throughput[which].append(outcome)
                print(
                    f"round {round_number + 1} {which:8s} {outcome['cpu_seconds']:6.1f} CPU s "
                    f"{outcome['tokens_per_cpu_second']:8.0f} real tokens/CPU s "
                    f"({outcome['seconds']:.1f} s training loop wall clock)"
                )
                shutil.rmtree(workdir / "trainer", ignore_errors=True)

        server = MlflowServer(tmp / "mlflow")
        os.environ["MLFLOW_TRACKING_URI"] = server.url
        tracking: dict[str, list[dict[str, Any]]] = {"logged": [], "silent": []}
        for round_number in range(args.tracking_rounds):
            order = ["silent", "logged"] if round_number % 2 == 0 else ["logged", "silent"]
            for which in order:
                workdir = tmp / f"tracking-{which}-{round_number}"
                if which == "logged":
                    outcome = run_engine_tracked(model_dir, train_rows, workdir, round_number)
                else:
                    outcome = run_engine(model_dir, train_rows, workdir, lambda *_: None)
                outcome["model"] = str(outcome["model"])
                tracking[which].append(outcome)
                print(
                    f"round {round_number + 1} {which:8s} {outcome['cpu_seconds']:6.1f} CPU s "
                    f"{outcome['seconds']:6.1f} s training loop wall clock"
                )

        report = _report(throughput, tracking, real_tokens, padded_tokens, len(train_rows))
        report |= {"objective": objective, "learned_tokens": learned_tokens}
        _print_table(report)
        args.report.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report: {args.report}")
        if report["held_out_loss_difference_percent"] > LOSS_TOLERANCE_PERCENT:
            # Then the two sides did not train to the same result, and their throughputs do not compare.
            sys.exit(
                f"FAILED: held-out loss {report['engine_held_out_loss']} (engine) against "
                f"{report['trainer_held_out_loss']} (plain Trainer) differs by "
                f"{report['held_out_loss_difference_percent']}%, more than {LOSS_TOLERANCE_PERCENT:g}%: "
                "the two sides did not do the same training, so the throughput comparison does not hold."
            )
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _batches_as_sampled(lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    """The lengths in the batches the Trainer draws (its RandomSampler, seeded as the run is)."""
    import torch

    generator = torch.Generator()
    generator.manual_seed(seed)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    ordered = [lengths[i] for i in order]
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def _report(
    throughput: dict[str, list[dict[str, Any]]],
    tracking: dict[str, list[dict[str, Any]]],
    real_tokens: int,
    padded_tokens: int,
    rows: int,
) -> dict[str, Any]:
    best = {which: max(r["tokens_per_cpu_second"] for r in runs) for which, runs in throughput.items()}
    best_wall = {which: max(r["tokens_per_second"] for r in runs) for which, runs in throughput.items()}
    losses = {which: runs[0]["held_out_loss"] for which, runs in throughput.items()}
    # Medians: a single quiet or busy moment of a shared machine moves a min or a max.
    cpu = {which: statistics.median(r["cpu_seconds"] for r in runs) for which, runs in tracking.items()}
    fastest = {which: statistics.median(r["seconds"] for r in runs) for which, runs in tracking.items()}
    in_calls = max(r["logging_call_seconds"] / r["seconds"] for r in tracking["logged"])
    # The direct measure: what logging takes from the training thread, plus all
    # the CPU the sending thread uses, against the CPU of a run without it.
    cost = max(r["logging_call_seconds"] + r["sending_cpu_seconds"] for r in tracking["logged"])
    return {
        "rows": rows,
        "real_tokens": real_tokens,
        "padded_tokens": padded_tokens,
        "torch_threads": 1,
        "engine_tokens_per_cpu_second": round(best["engine"]),
        "trainer_tokens_per_cpu_second": round(best["trainer"]),
        "throughput_ratio": round(best["engine"] / best["trainer"], 2),
        "engine_tokens_per_wall_second": round(best_wall["engine"]),
        "trainer_tokens_per_wall_second": round(best_wall["trainer"]),
        "throughput_ratio_wall_clock": round(best_wall["engine"] / best_wall["trainer"], 2),
        "engine_held_out_loss": round(losses["engine"], 4),
        "trainer_held_out_loss": round(losses["trainer"], 4),
        "held_out_loss_difference_percent": round(
            100 * abs(losses["engine"] - losses["trainer"]) / losses["trainer"], 3
        ),
        "training_thread_in_logging_percent": round(100 * in_calls, 3),
        "sending_cpu_seconds": round(max(r["sending_cpu_seconds"] for r in tracking["logged"]), 3),
        "tracking_overhead_percent": round(100 * cost / cpu["silent"], 2),
        "tracked_cpu_seconds": round(cpu["logged"], 2),
        "untracked_cpu_seconds": round(cpu["silent"], 2),
        "tracking_overhead_ab_cpu_percent": round(100 * (cpu["logged"] / cpu["silent"] - 1), 2),
        "tracked_wall_seconds": round(fastest["logged"], 2),
        "untracked_wall_seconds": round(fastest["silent"], 2),
        "tracking_overhead_wall_clock_percent": round(100 * (fastest["logged"] / fastest["silent"] - 1), 2),
        "tracked_run_end_seconds": round(max(r["end_seconds"] for r in tracking["logged"]), 3),
        "metric_points_stored": [r["points"] for r in tracking["logged"]],
        "runs": {"throughput": throughput, "tracking": tracking},
    }


def _print_table(report: dict[str, Any]) -> None:
    rows = [
        ("real tokens per CPU s, engine (packed)", f"{report['engine_tokens_per_cpu_second']}"),
        ("real tokens per CPU s, plain Trainer (padded)", f"{report['trainer_tokens_per_cpu_second']}"),
        ("throughput ratio (target >= 1.3)", f"{report['throughput_ratio']}x"),
        ("throughput ratio, wall clock (noisy)", f"{report['throughput_ratio_wall_clock']}x"),
        (f"held-out loss ({report['objective']}), engine", f"{report['engine_held_out_loss']}"),
        (f"held-out loss ({report['objective']}), plain Trainer", f"{report['trainer_held_out_loss']}"),
        (
            f"loss difference (fails above {LOSS_TOLERANCE_PERCENT:g}%)",
            f"{report['held_out_loss_difference_percent']}%",
        ),
        ("training thread inside logging calls", f"{report['training_thread_in_logging_percent']}%"),
        ("CPU s sending metrics (background thread)", f"{report['sending_cpu_seconds']}"),
        ("tracking overhead (target <= 3%)", f"{report['tracking_overhead_percent']}%"),
        ("CPU s, MLflow logging (median)", f"{report['tracked_cpu_seconds']}"),
        ("CPU s, no logging (median)", f"{report['untracked_cpu_seconds']}"),
        ("A/B overhead, CPU (noisy)", f"{report['tracking_overhead_ab_cpu_percent']}%"),
        ("A/B overhead, wall clock (noisier)", f"{report['tracking_overhead_wall_clock_percent']}%"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>10}")


if __name__ == "__main__":
    main()
