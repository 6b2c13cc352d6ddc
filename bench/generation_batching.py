"""Batched greedy generation against one row at a time, side by side on one machine.

The evaluation's generative tasks (BLEU, ROUGE, exact match, answer accuracy)
generate an answer for every row with the engine's ``generate``, which pads
prompts on the left into batches, sorted by length so that little padding is
computed. This bench runs that same function on the same prompts three ways:

* ``one at a time``: batch size 1, the baseline;
* ``batched, arrival order``: batches of the prompts as they come, which is
  what batching costs without the sort (each batch passed to ``generate`` alone);
* ``batched`` (the product): ``generate`` with the whole list and ``--batch-size``.

Every side generates exactly ``--new-tokens`` tokens per row (end-of-sequence
held back with ``min_new_tokens``), so the work is the same; the figure is
rows per second. The model is the tiny model's tokenizer with a wider, deeper
Llama of about 1.8M parameters (``bench.engine_throughput.build_model``), on the
CPU with one torch thread: CPU seconds are reported beside wall seconds, since
on a shared machine another process's burst moves wall time by tens of percent.
Rounds alternate the sides; each side's best round counts. The bench also
reports how many rows the batched sides answered exactly as one at a time did
(left padding changes float rounding, so a near tie may go the other way).
It exits 1 when the product's speed-up is under ``--min-ratio``.

Run from the repository root: .venv/bin/python -m bench.generation_batching [--rows 128] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.engine_throughput import WORDS, build_model  # noqa: E402


def skewed_prompts(count: int, seed: int) -> list[str]:
    """Instruction prompts in the training template: most a dozen words, some a few hundred."""
    from workers.engine.data import InstructionRow, instruction_prompt

    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        words = rng.randint(50, 140) if rng.random() < 0.15 else rng.randint(4, 24)
        row = InstructionRow(instruction=" ".join(rng.choices(WORDS, k=words)), output="-")
        prompts.append(instruction_prompt(row))
    return prompts


def timed(run: Callable[[], list[str]]) -> tuple[list[str], float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    outputs = run()
    return outputs, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-ratio", type=float, default=3.0)
    parser.add_argument(
        "--report", type=Path, default=Path(tempfile.gettempdir()) / "generation_batching.json"
    )
    args = parser.parse_args()

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workers.engine.evaluation.generation import generate

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    model_dir = build_model(Path(tempfile.mkdtemp(prefix="tuneyard-bench-generation-")) / "model")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompts = skewed_prompts(args.rows, seed=1)
    lengths = [len(tokenizer(prompt)["input_ids"]) for prompt in prompts]
    parameters = sum(p.numel() for p in model.parameters())
    mean = sum(lengths) / len(lengths)
    print(
        f"{len(prompts)} prompts of {min(lengths)}..{max(lengths)} tokens (mean {mean:.0f}), "
        f"{args.new_tokens} new tokens each, {parameters / 1e6:.1f}M parameters, "
        f"{args.threads} torch thread(s), batch size {args.batch_size}"
    )

    def generated(batch: list[str], batch_size: int) -> list[str]:
        new = args.new_tokens
        return generate(
            model, tokenizer, batch, max_new_tokens=new, min_new_tokens=new, batch_size=batch_size
        )

    def arrival_order() -> list[str]:
        outputs: list[str] = []
        for start in range(0, len(prompts), args.batch_size):
            outputs += generated(prompts[start : start + args.batch_size], args.batch_size)
        return outputs

    sides: dict[str, Callable[[], list[str]]] = {
        "one at a time": lambda: generated(prompts, 1),
        "batched, arrival order": arrival_order,
        "batched": lambda: generated(prompts, args.batch_size),
    }
    generated(prompts[:4], 4)  # warm-up: first calls pay for lazy initialisation
    best: dict[str, dict[str, Any]] = {}
    outputs: dict[str, list[str]] = {}
    for round_number in range(args.rounds):
        for name, run in sides.items():
            texts, wall, cpu = timed(run)
            outputs[name] = texts
            print(f"round {round_number + 1}: {name:24} wall {wall:7.2f} s  cpu {cpu:7.2f} s")
            if name not in best or cpu < best[name]["cpu_s"]:
                best[name] = {"wall_s": wall, "cpu_s": cpu}
    for figures in best.values():
        figures["rows_per_cpu_s"] = len(prompts) / figures["cpu_s"]
        figures["rows_per_wall_s"] = len(prompts) / figures["wall_s"]
    baseline = outputs["one at a time"]
    new_tokens_checked = all(
        len(tokenizer(text, add_special_tokens=False)["input_ids"]) > 0 for text in baseline
    )
    report = {
        "rows": len(prompts),
        "new_tokens": args.new_tokens,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "parameters": parameters,
        "sides": best,
        "ratio_cpu": best["one at a time"]["cpu_s"] / best["batched"]["cpu_s"],
        "ratio_wall": best["one at a time"]["wall_s"] / best["batched"]["wall_s"],
        "ratio_cpu_arrival_order": best["one at a time"]["cpu_s"] / best["batched, arrival order"]["cpu_s"],
        "same_answers": {
            name: sum(a == b for a, b in zip(texts, baseline, strict=True)) / len(baseline)
            for name, texts in outputs.items()
        },
        "every_row_generated": new_tokens_checked,
    }
    args.report.write_text(json.dumps(report, indent=2))
    print()
    print(f"{'side':24} {'rows/s (cpu)':>13} {'rows/s (wall)':>14} {'same answers':>13}")
    for name, figures in best.items():
        same = report["same_answers"][name]
        print(f"{name:24} {figures['rows_per_cpu_s']:13.1f} {figures['rows_per_wall_s']:14.1f} {same:13.1%}")
    print(
        f"\nbatched / one at a time: {report['ratio_cpu']:.2f}x rows per CPU second "
        f"({report['ratio_wall']:.2f}x wall); arrival-order batches: {report['ratio_cpu_arrival_order']:.2f}x"
    )
    print(f"report: {args.report}")
    if report["ratio_cpu"] < args.min_ratio:
        print(f"under the {args.min_ratio}x target", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
