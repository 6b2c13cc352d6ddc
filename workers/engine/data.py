"""Instruction datasets: read JSONL rows, turn each into one training text, tokenize.

A row is validated by ``workers.spec.InstructionRow``, the same model the
control plane checks uploads with, so both sides agree on what a good row is.
No torch here: a bad row must fail the job before seconds go into loading it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from workers.engine import JobInputError
from workers.spec import InstructionRow

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class DatasetError(JobInputError):
    """A dataset the engine cannot train on."""


# The one template for every instruction dataset (Alpaca's layout); the tiny
# test model's tokenizer was trained on text in this shape.
def format_example(row: InstructionRow) -> str:
    sections = [f"### Instruction:\n{row.instruction}"]
    if row.input:
        sections.append(f"### Input:\n{row.input}")
    sections.append(f"### Response:\n{row.output}")
    return "\n\n".join(sections)


def dataset_files(path: Path) -> list[Path]:
    """The JSONL files making up one dataset: the file itself, or a directory's ``*.jsonl``."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(path.rglob("*.jsonl"))
        if not files:
            raise DatasetError(f"dataset directory {path.name!r} has no .jsonl file")
        return files
    raise DatasetError(f"dataset file {str(path)!r} does not exist")


def read_instruction_rows(files: Iterable[Path]) -> list[InstructionRow]:
    """Every row of ``files``, in order; blank lines are skipped.

    Row numbers in errors are line numbers (from 1), so a person can find the row.
    """
    rows: list[InstructionRow] = []
    for file in files:
        with file.open(encoding="utf-8-sig") as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    rows.append(_parse_row(line, number, file.name))
    if not rows:
        raise DatasetError("the dataset has no rows")
    return rows


def _parse_row(line: str, number: int, file_name: str) -> InstructionRow:
    where = f"dataset row {number}"
    try:
        value: Any = json.loads(line)
    except ValueError as exc:
        raise DatasetError(f"{where} is not valid JSON ({file_name}: {exc})") from None
    if not isinstance(value, dict):
        raise DatasetError(f"{where} is not a JSON object ({file_name})")
    try:
        return InstructionRow.model_validate(value)
    except ValidationError as exc:
        problem = _describe(exc.errors()[0])
        raise DatasetError(f"{where} {problem} ({file_name})") from None


def _describe(error: ErrorDetails) -> str:
    """One validation error as the end of a sentence that starts with "dataset row N"."""
    field = ".".join(str(part) for part in error["loc"])
    match error["type"]:
        case "missing":
            return f"has no {field!r}"
        case "extra_forbidden":
            return f"has an unknown field {field!r}"
        case "string_type":
            return f"has a non-string {field!r}"
        case "string_too_short":
            return f"has an empty {field!r}"
        case _:
            # A custom validator's own words ("must not be blank"), not pydantic's "Value error, …".
            reason = error.get("ctx", {}).get("error", error["msg"])
            return f"has a bad {field!r}: {reason}"


def tokenize(
    texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_seq_length: int
) -> list[dict[str, list[int]]]:
    """Token ids per text, cut to ``max_seq_length`` including the end-of-sequence token.

    The eos is appended by hand because most causal-LM tokenizers do not add
    it, and without it the model never learns where a response stops.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise JobInputError("the base model's tokenizer has no end-of-sequence token")
    examples = []
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=max_seq_length - 1)["input_ids"]
        examples.append({"input_ids": [*ids, eos]})
    return examples
