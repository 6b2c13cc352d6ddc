"""The row schemas a dataset can have, how one is recognised, and what each row must hold.

Each schema has one normalized Arrow layout: every version of every dataset
of that schema is stored with exactly these columns, so a worker reads any of
them the same way. Rows are checked twice over, on purpose: ``table_normalize``
checks a whole parsed batch at once with Arrow compute (the fast path that
carries large files), and ``row_normalize`` checks one Python row at a time,
only for batches the fast path cannot vouch for, to name each bad row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from controlplane.datasets.ingest.problems import IngestRefused, ProblemKind
from workers.spec import DatasetSchema

ROLES = ("system", "user", "assistant", "tool")
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

ARROW_SCHEMAS: dict[DatasetSchema, pa.Schema] = {
    DatasetSchema.TEXT: pa.schema([("text", pa.string())]),
    DatasetSchema.INSTRUCTION: pa.schema(
        [("instruction", pa.string()), ("input", pa.string()), ("output", pa.string())]
    ),
    DatasetSchema.CHAT: pa.schema([("messages", pa.list_(MESSAGE))]),
    DatasetSchema.PREFERENCE: pa.schema(
        [("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string())]
    ),
    DatasetSchema.MULTIPLE_CHOICE: pa.schema(
        [("question", pa.string()), ("choices", pa.list_(pa.string())), ("answer", pa.int64())]
    ),
}

# Fields that may be left out or empty (they default to ""); every other field is required.
OPTIONAL_FIELDS: dict[DatasetSchema, frozenset[str]] = {DatasetSchema.INSTRUCTION: frozenset({"input"})}

# The column names each schema is recognised by, most specific first.
_DETECTION: list[tuple[DatasetSchema, frozenset[str]]] = [
    (DatasetSchema.CHAT, frozenset({"messages"})),
    (DatasetSchema.PREFERENCE, frozenset({"prompt", "chosen", "rejected"})),
    (DatasetSchema.MULTIPLE_CHOICE, frozenset({"question", "choices", "answer"})),
    (DatasetSchema.INSTRUCTION, frozenset({"instruction", "output"})),
    (DatasetSchema.TEXT, frozenset({"text"})),
]


def fields_of(schema: DatasetSchema) -> list[str]:
    return ARROW_SCHEMAS[schema].names


def required_fields(schema: DatasetSchema) -> list[str]:
    return [name for name in fields_of(schema) if name not in OPTIONAL_FIELDS.get(schema, frozenset())]


@dataclass(frozen=True)
class Layout:
    """A schema and where each of its fields comes from in the file (field -> source column)."""

    schema: DatasetSchema
    mapping: Mapping[str, str]

    def source_of(self, field: str) -> str:
        return self.mapping.get(field, field)


def layout_choose(columns: list[str], *, schema: DatasetSchema | None, mapping: Mapping[str, str]) -> Layout:
    """The schema named, or the one the (mapped) column names point to.

    ``mapping`` maps a schema field to the file's column ("instruction" -> "question_text").
    """
    if schema is None:
        inverse = {source: target for target, source in mapping.items()}
        names = {inverse.get(column, column) for column in columns}
        schema = _schema_detect(names)
        if schema is None:
            # repr() keeps control characters (a NUL byte above all) out of the stored message.
            shown = ", ".join(repr(column) for column in sorted(columns)[:10]) or "none"
            raise IngestRefused(
                f"The schema could not be told from the columns ({shown}). Name it, or map the "
                "columns: text; instruction/input/output; messages; prompt/chosen/rejected; "
                "question/choices/answer."
            )
    unknown = set(mapping) - set(fields_of(schema))
    if unknown:
        raise IngestRefused(
            f"The mapping names {', '.join(repr(name) for name in sorted(unknown))}, "
            f"which the {schema.value} schema does not have "
            f"(its fields: {', '.join(fields_of(schema))})."
        )
    return Layout(schema=schema, mapping=dict(mapping))


def _schema_detect(names: set[str]) -> DatasetSchema | None:
    """The schema whose telling columns are all there; else the one sharing most columns, so
    that a first row missing a field is reported as missing that field."""
    for candidate, needed in _DETECTION:
        if needed <= names:
            return candidate
    overlaps = [(len(set(fields_of(candidate)) & names), candidate) for candidate, _ in _DETECTION]
    best, candidate = max(overlaps, key=lambda pair: pair[0])
    return candidate if best else None


# --- the fast path: a whole parsed batch at once ------------------------------


def _as_plain(array: pa.ChunkedArray | pa.Array, target: pa.DataType) -> pa.ChunkedArray | pa.Array | None:
    """The column as ``target`` if it already is that (large strings count), else None."""
    if array.type == target:
        return array
    if target == pa.string() and array.type == pa.large_string():
        return array.cast(pa.string())
    if target == pa.list_(pa.string()) and array.type in (
        pa.large_list(pa.string()),
        pa.list_(pa.large_string()),
    ):
        return array.cast(target)
    return None


def table_normalize(table: pa.Table, layout: Layout) -> pa.Table | None:
    """The batch in the normalized layout, or None when any row needs a closer look.

    None is not an error: the slow path then checks the rows one by one and
    names the bad ones. Only a batch with nothing wrong passes here.
    """
    schema = ARROW_SCHEMAS[layout.schema]
    expected = {layout.source_of(name) for name in schema.names}
    if set(table.column_names) - expected:
        return None
    columns = []
    for target in schema:
        source = layout.source_of(target.name)
        if source not in table.column_names:
            if target.name in OPTIONAL_FIELDS.get(layout.schema, frozenset()):
                columns.append(pa.array([""] * table.num_rows, pa.string()))
                continue
            return None
        column = table.column(source)
        if target.name in OPTIONAL_FIELDS.get(layout.schema, frozenset()):
            if column.type == pa.null():
                column = pa.chunked_array([pa.array([""] * table.num_rows, pa.string())])
            elif column.null_count:
                column = pc.fill_null(column, "")
        plain = _as_plain(column, target.type) if target.type != MESSAGE else None
        if target.name == "messages":
            plain = column if column.type == pa.list_(MESSAGE) else None
        if plain is None or plain.null_count:
            return None
        if not _values_check(target.name, plain, layout.schema):
            return None
        columns.append(plain)
    normalized = pa.Table.from_arrays(columns, schema=schema)
    if layout.schema is DatasetSchema.MULTIPLE_CHOICE and not answers_check(normalized):
        return None
    return normalized


def _blank_any(strings: pa.ChunkedArray | pa.Array) -> bool:
    # utf8_is_space is false for "", so empty strings are checked on their own; both kernels
    # read the strings in place, where trimming would copy them all.
    blank = pc.or_(pc.equal(pc.binary_length(strings), 0), pc.utf8_is_space(strings))
    return bool(pc.any(blank).as_py())


def _values_check(name: str, column: pa.ChunkedArray | pa.Array, schema: DatasetSchema) -> bool:
    if name in OPTIONAL_FIELDS.get(schema, frozenset()):
        return True
    if column.type == pa.string():
        return not _blank_any(column)
    if name == "messages":
        if bool(pc.any(pc.equal(pc.list_value_length(column), 0)).as_py()):
            return False
        messages = pc.list_flatten(column)
        roles, contents = pc.struct_field(messages, "role"), pc.struct_field(messages, "content")
        if roles.null_count or contents.null_count:
            return False
        return bool(pc.all(pc.is_in(roles, pa.array(ROLES))).as_py()) and not _blank_any(contents)
    if name == "choices":
        lengths = pc.list_value_length(column)
        flat = pc.list_flatten(column)
        return bool(pc.min(lengths).as_py() >= 2) and not flat.null_count and not _blank_any(flat)
    return True


def answers_check(table: pa.Table) -> bool:
    """Every multiple-choice answer is an index into its own choices."""
    answers, lengths = table.column("answer"), pc.list_value_length(table.column("choices"))
    return bool(pc.all(pc.and_(pc.greater_equal(answers, 0), pc.less(answers, lengths))).as_py())


# --- the slow path: one row, every problem named -------------------------------


class RowProblem(Exception):
    def __init__(self, kind: ProblemKind, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def _text(value: Any, field: str, *, required: bool) -> str:
    if value is None:
        if required:
            raise RowProblem(ProblemKind.MISSING, f"'{field}' is missing")
        return ""
    if not isinstance(value, str):
        raise RowProblem(ProblemKind.WRONG_TYPE, f"'{field}' must be text, not {_type_name(value)}")
    if not value.isascii() and not _encodable(value):
        raise RowProblem(ProblemKind.ENCODING, f"'{field}' holds half of a surrogate pair, which is not text")
    if required and not value.strip():
        raise RowProblem(ProblemKind.EMPTY, f"'{field}' is empty")
    return value


def _encodable(value: str) -> bool:
    """Whether the text can be stored: JSON lets a lone surrogate through as an escape ("\\ud800")."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "true/false", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _maybe_json(value: Any) -> Any:
    """A list written as JSON text, as a CSV cell has to hold it."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except ValueError:
            return value
        except RecursionError:
            raise RowProblem(ProblemKind.SYNTAX, "holds a list nested too deeply to read") from None
    return value


def _messages(value: Any) -> list[dict[str, str]]:
    value = _maybe_json(value)
    if value is None:
        raise RowProblem(ProblemKind.MISSING, "'messages' is missing")
    if not isinstance(value, list):
        raise RowProblem(ProblemKind.WRONG_TYPE, f"'messages' must be a list, not {_type_name(value)}")
    if not value:
        raise RowProblem(ProblemKind.EMPTY, "'messages' is empty")
    messages = []
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise RowProblem(ProblemKind.WRONG_TYPE, f"'{where}' must be an object with 'role' and 'content'")
        extra = set(message) - {"role", "content"}
        if extra:
            raise RowProblem(
                ProblemKind.UNKNOWN_FIELD, f"'{where}' has an unknown field {sorted(extra)[0]!r}"
            )
        role = _text(message.get("role"), f"{where}.role", required=True)
        if role not in ROLES:
            raise RowProblem(
                ProblemKind.UNKNOWN_ROLE, f"'{where}.role' is {role!r}; it must be one of {', '.join(ROLES)}"
            )
        messages.append(
            {"role": role, "content": _text(message.get("content"), f"{where}.content", required=True)}
        )
    return messages


def _choices(value: Any) -> list[str]:
    value = _maybe_json(value)
    if value is None:
        raise RowProblem(ProblemKind.MISSING, "'choices' is missing")
    if not isinstance(value, list):
        raise RowProblem(ProblemKind.WRONG_TYPE, f"'choices' must be a list, not {_type_name(value)}")
    if len(value) < 2:
        raise RowProblem(ProblemKind.EMPTY, "'choices' needs at least two choices")
    return [_text(choice, f"choices[{i}]", required=True) for i, choice in enumerate(value)]


def _answer(value: Any, choices: list[str]) -> int:
    """An answer index; also accepted: a letter ("B") or a digit string, as CSV files write them."""
    if value is None:
        raise RowProblem(ProblemKind.MISSING, "'answer' is missing")
    if isinstance(value, str):
        text = value.strip()
        # ASCII only: "²" is a digit to Python but not to int(), and "é" is no choice letter.
        # The length bound keeps a huge number out of int().
        if len(text) == 1 and text.isascii() and text.isalpha():
            value = ord(text.upper()) - ord("A")
        elif 0 < len(text) <= 9 and text.isascii() and text.isdecimal():
            value = int(text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RowProblem(
            ProblemKind.WRONG_TYPE, "'answer' must be a choice's index (0, 1, ...) or letter (A, B, ...)"
        )
    if not 0 <= value < len(choices):
        raise RowProblem(ProblemKind.BAD_ANSWER, f"'answer' {value} is not one of the {len(choices)} choices")
    return value


def row_normalize(row: Any, layout: Layout) -> dict[str, Any]:
    """The row in the normalized layout, or RowProblem saying what is wrong with it."""
    if not isinstance(row, dict):
        raise RowProblem(
            ProblemKind.NOT_AN_OBJECT, f"must be an object with the {layout.schema.value} fields"
        )
    names = fields_of(layout.schema)
    sources = {layout.source_of(name): name for name in names}
    for column in row:
        if column not in sources:
            raise RowProblem(
                ProblemKind.UNKNOWN_FIELD, f"{column!r} is not a field of the {layout.schema.value} schema"
            )
    values = {name: row.get(layout.source_of(name)) for name in names}
    optional = OPTIONAL_FIELDS.get(layout.schema, frozenset())
    if layout.schema is DatasetSchema.CHAT:
        return {"messages": _messages(values["messages"])}
    if layout.schema is DatasetSchema.MULTIPLE_CHOICE:
        question = _text(values["question"], "question", required=True)
        choices = _choices(values["choices"])
        return {"question": question, "choices": choices, "answer": _answer(values["answer"], choices)}
    return {name: _text(values[name], name, required=name not in optional) for name in names}
