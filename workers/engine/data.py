"""Datasets: read rows (normalized Parquet, or JSONL), turn each into one training text, tokenize.

The control plane stores every dataset version as Parquet with one fixed set
of columns per schema; it is read here a row group at a time with pyarrow.
Instruction rows are validated by ``workers.spec.InstructionRow``; chat rows
keep their messages (``ChatRow``) so the base model's chat template can be
applied, preference rows keep their pair (``PreferenceRow``) for DPO; text and
multiple-choice rows are trained on as plain text. JSONL instruction files, as
stored before Parquet, still work.
No torch here: a bad row must fail the job before seconds go into loading it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from workers.engine import JobInputError
from workers.spec import DatasetSchema

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class DatasetError(JobInputError):
    """A dataset the engine cannot train on."""


class InstructionRow(BaseModel):
    """One instruction-dataset row, as the engine reads it (ingest stored it so already)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    instruction: str = Field(min_length=1)
    input: str = ""
    output: str = Field(min_length=1)

    @field_validator("instruction", "output")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


@dataclass(frozen=True)
class TextRow:
    """A row of a non-instruction dataset, already made into the text to train on."""

    text: str


@dataclass(frozen=True)
class ChatMessage:
    role: str  # system, user, assistant (or a tool's role, as ingest let it through)
    content: str


@dataclass(frozen=True)
class ChatRow:
    """A conversation; supervised fine-tuning learns the assistant's turns."""

    messages: tuple[ChatMessage, ...]


@dataclass(frozen=True)
class PreferenceRow:
    """A prompt with a preferred and a rejected answer: what DPO learns from."""

    prompt: str
    chosen: str
    rejected: str


TrainingRow = InstructionRow | TextRow | ChatRow | PreferenceRow


@dataclass(frozen=True)
class MultipleChoiceRow:
    """A question, its choices and the index of the right one: what an evaluate job scores by likelihood."""

    question: str
    choices: tuple[str, ...]
    answer: int


# The one template for every instruction dataset (Alpaca's layout); the tiny
# test model's tokenizer was trained on text in this shape.
def instruction_prompt(row: InstructionRow) -> str:
    """An instruction row's prompt: everything before its output."""
    sections = [f"### Instruction:\n{row.instruction}"]
    if row.input:
        sections.append(f"### Input:\n{row.input}")
    sections.append("### Response:\n")
    return "\n\n".join(sections)


def format_example(row: TrainingRow) -> str:
    """A row as one plain text (for chat, without the base model's chat template; see ``sft``)."""
    match row:
        case TextRow():
            return row.text
        case InstructionRow():
            return instruction_prompt(row) + row.output
        case ChatRow():
            return "\n\n".join(f"### {m.role.capitalize()}:\n{m.content}" for m in row.messages)
        case PreferenceRow():
            # Supervised fine-tuning on a preference pair learns the chosen answer.
            return f"{row.prompt}\n\n{row.chosen}"


def dataset_files(path: Path) -> list[Path]:
    """The files making up one dataset: the file itself, or a directory's ``*.parquet`` or ``*.jsonl``."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(path.rglob("*.parquet")) or sorted(path.rglob("*.jsonl"))
        if not files:
            raise DatasetError(f"dataset directory {path.name!r} has no .parquet or .jsonl file")
        return files
    raise DatasetError(f"dataset file {str(path)!r} does not exist")


def read_training_rows(files: Iterable[Path], schema: DatasetSchema) -> list[TrainingRow]:
    """Every row of ``files``, of the dataset schema the job's spec names, in order, as training rows.

    A JSONL file (a local path, never an ingested version) holds instruction
    rows; blank lines are skipped and row numbers in errors are line numbers
    (from 1), so a person can find the row.
    """
    rows: list[TrainingRow] = []
    for file in files:
        if file.suffix == ".parquet":
            rows.extend(_parquet_rows(file, schema))
            continue
        if schema is not DatasetSchema.INSTRUCTION:
            raise DatasetError(
                f"dataset file {file.name!r} is JSONL, which holds instruction rows, not {schema}"
            )
        with file.open(encoding="utf-8-sig") as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    rows.append(_parse_row(line, number, file.name))
    if not rows:
        raise DatasetError("the dataset has no rows")
    return rows


PARQUET_BATCH_ROWS = 4096


def read_multiple_choice_rows(files: Iterable[Path]) -> list[MultipleChoiceRow]:
    """Every row of normalized multiple-choice Parquet ``files`` (question, choices, answer), in order.

    Training reads these rows as plain text (``read_training_rows``); an
    evaluation needs the choices apart, to score each one.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows: list[MultipleChoiceRow] = []
    for file in files:
        if file.suffix != ".parquet":
            raise DatasetError(
                f"dataset file {file.name!r} is not Parquet: multiple-choice rows are stored as Parquet"
            )
        try:
            parquet = pq.ParquetFile(file)
            columns = set(parquet.schema_arrow.names)
            if not SCHEMA_COLUMNS[DatasetSchema.MULTIPLE_CHOICE] <= columns:
                raise DatasetError(
                    f"dataset file {file.name!r} is not multiple-choice: it has the columns "
                    f"{', '.join(sorted(columns))}, not question, choices and answer"
                )
            for batch in parquet.iter_batches(
                batch_size=PARQUET_BATCH_ROWS, columns=sorted(SCHEMA_COLUMNS[DatasetSchema.MULTIPLE_CHOICE])
            ):
                for value in batch.to_pylist():
                    rows.append(_multiple_choice_row(value, len(rows) + 1, file.name))
        except (pa.ArrowException, OSError) as exc:
            raise DatasetError(f"dataset file {file.name!r} is not readable Parquet ({exc})") from None
    if not rows:
        raise DatasetError("the dataset has no rows")
    return rows


def _multiple_choice_row(value: dict[str, Any], number: int, file_name: str) -> MultipleChoiceRow:
    question, choices, answer = value["question"], value["choices"], value["answer"]
    # Ingest guarantees these; a file written by hand may not.
    if (
        not isinstance(question, str)
        or not isinstance(choices, list)
        or not all(isinstance(c, str) for c in choices)
    ):
        raise DatasetError(f"dataset row {number} has a question or choices that are not text ({file_name})")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise DatasetError(
            f"dataset row {number}'s answer {answer!r} is not one of its choices ({file_name})"
        )
    return MultipleChoiceRow(question, tuple(choices), answer)


def _parquet_rows(file: Path, schema: DatasetSchema) -> Iterator[TrainingRow]:
    """The rows of a normalized Parquet file, a batch at a time (never the whole file in Arrow)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(file)
        columns = set(parquet.schema_arrow.names)
        to_row = _row_reader(schema, columns, file.name)
        number = 0
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for value in batch.to_pylist():
                number += 1
                yield to_row(value, number)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"dataset file {file.name!r} is not readable Parquet ({exc})") from None


def _row_reader(
    schema: DatasetSchema, columns: set[str], file_name: str
) -> Callable[[dict[str, Any], int], TrainingRow]:
    """How to turn a row of ``schema``'s normalized Parquet into a training row; a file without
    that schema's columns is refused, never read as another schema."""
    needed = SCHEMA_COLUMNS[schema]
    if not needed <= columns:
        raise DatasetError(
            f"dataset file {file_name!r} is not {schema} data: it has the columns "
            f"{', '.join(sorted(columns))}, not {', '.join(sorted(needed))}"
        )
    match schema:
        case DatasetSchema.INSTRUCTION:

            def instruction(value: dict[str, Any], number: int) -> TrainingRow:
                try:
                    return InstructionRow.model_validate({k: v for k, v in value.items() if v is not None})
                except ValidationError as exc:
                    raise DatasetError(
                        f"dataset row {number} {_describe(exc.errors()[0])} ({file_name})"
                    ) from None

            return instruction
        case DatasetSchema.CHAT:
            return lambda value, number: ChatRow(
                tuple(ChatMessage(m["role"], m["content"]) for m in value["messages"])
            )
        case DatasetSchema.PREFERENCE:
            return lambda value, number: PreferenceRow(value["prompt"], value["chosen"], value["rejected"])
        case DatasetSchema.MULTIPLE_CHOICE:
            return lambda value, number: TextRow(_choice_text(value))
        case _:
            return lambda value, number: TextRow(value["text"])


def _choice_label(index: int) -> str:
    """A, B, ... Z, then AA, AB, ... as spreadsheet columns go: ingest takes any number of choices."""
    label = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        label = chr(ord("A") + rest) + label
    return label


def _choice_text(value: dict[str, Any]) -> str:
    lines = [value["question"], *(f"{_choice_label(i)}. {c}" for i, c in enumerate(value["choices"]))]
    return "\n".join(lines) + f"\nAnswer: {_choice_label(value['answer'])}"


# The columns of each schema's normalized Parquet (see the control plane's ingest).
SCHEMA_COLUMNS: dict[DatasetSchema, frozenset[str]] = {
    DatasetSchema.TEXT: frozenset({"text"}),
    DatasetSchema.INSTRUCTION: frozenset({"instruction", "output"}),
    DatasetSchema.CHAT: frozenset({"messages"}),
    DatasetSchema.PREFERENCE: frozenset({"prompt", "chosen", "rejected"}),
    DatasetSchema.MULTIPLE_CHOICE: frozenset({"question", "choices", "answer"}),
}


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
