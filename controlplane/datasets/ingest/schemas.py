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

from controlplane.datasets.ingest.problems import IngestRefused, ProblemKind, clipped
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


@dataclass(frozen=True)
class LongNumber:
    """A whole number too long to be any row's value, kept as its count of digits.

    Python refuses to read a number of more than 4,300 digits (an error, not a
    value), and no field holds one of more than a few: the row is reported as
    holding a number where it should not.
    """

    digits: int


# Enough for any 64-bit integer with its sign.
MAX_INT_CHARS = 20


def json_int(text: str) -> int | LongNumber:
    """``parse_int`` for ``json``: a number too long to hold is a LongNumber instead of an error."""
    return int(text) if len(text) <= MAX_INT_CHARS else LongNumber(len(text.lstrip("-")))


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
            shown = ", ".join(repr(clipped(column, 60)) for column in sorted(columns)[:10]) or "none"
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


def table_normalize(table: pa.Table, layout: Layout, *, max_field_bytes: int) -> pa.Table | None:
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
        if not _values_check(target.name, plain, layout.schema, max_field_bytes):
            return None
        columns.append(plain)
    normalized = pa.Table.from_arrays(columns, schema=schema)
    if layout.schema is DatasetSchema.MULTIPLE_CHOICE and not answers_check(normalized):
        return None
    if layout.schema is DatasetSchema.PREFERENCE and bool(
        pc.any(pc.equal(normalized.column("chosen"), normalized.column("rejected"))).as_py()
    ):
        return None
    return normalized


def _blank_any(strings: pa.ChunkedArray | pa.Array) -> bool:
    # utf8_is_space is false for "", so empty strings are checked on their own; both kernels
    # read the strings in place, where trimming would copy them all.
    blank = pc.or_(pc.equal(pc.binary_length(strings), 0), pc.utf8_is_space(strings))
    return bool(pc.any(blank).as_py())


def _texts_fit(strings: pa.ChunkedArray | pa.Array, most: int) -> bool:
    """No value longer than ``most`` bytes, and none holding a NUL character."""
    longest = pc.max(pc.binary_length(strings)).as_py()
    if longest is not None and longest > most:
        return False
    return not bool(pc.any(pc.match_substring(strings, "\x00")).as_py())


def _values_check(name: str, column: pa.ChunkedArray | pa.Array, schema: DatasetSchema, most: int) -> bool:
    if column.type == pa.string():
        if not _texts_fit(column, most):
            return False
        return name in OPTIONAL_FIELDS.get(schema, frozenset()) or not _blank_any(column)
    if name == "messages":
        if bool(pc.any(pc.equal(pc.list_value_length(column), 0)).as_py()):
            return False
        messages = pc.list_flatten(column)
        roles, contents = pc.struct_field(messages, "role"), pc.struct_field(messages, "content")
        if roles.null_count or contents.null_count:
            return False
        return (
            bool(pc.all(pc.is_in(roles, pa.array(ROLES))).as_py())
            and _texts_fit(contents, most)
            and not _blank_any(contents)
        )
    if name == "choices":
        lengths = pc.list_value_length(column)
        flat = pc.list_flatten(column)
        return (
            bool(pc.min(lengths).as_py() >= 2)
            and not flat.null_count
            and _texts_fit(flat, most)
            and not _blank_any(flat)
        )
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


def _text(value: Any, field: str, *, required: bool, most: int) -> str:
    if value is None:
        if required:
            raise RowProblem(ProblemKind.MISSING, f"'{field}' is missing")
        return ""
    if not isinstance(value, str):
        raise RowProblem(ProblemKind.WRONG_TYPE, f"'{field}' must be text, not {_type_name(value)}")
    # Only text of more than a quarter of the bound can be over it (4 bytes a character at most).
    if len(value) * 4 > most:
        size = len(value.encode("utf-8", errors="surrogatepass"))
        if size > most:
            raise RowProblem(
                ProblemKind.TOO_LARGE, f"the field '{field}' is {size:,} bytes; the most is {most:,}"
            )
    if "\x00" in value:
        # Stored, it would be invisible on every page and cut the text short in many tools.
        raise RowProblem(ProblemKind.NUL_CHARACTER, f"'{field}' holds a NUL character (\\u0000); remove it")
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
    names = {
        dict: "an object",
        list: "a list",
        bool: "true/false",
        int: "a number",
        float: "a number",
        LongNumber: "a number",
    }
    return names.get(type(value), type(value).__name__)


def _maybe_json(value: Any) -> Any:
    """A list written as JSON text, as a CSV cell has to hold it."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value, parse_int=json_int)
        except ValueError:
            return value
        except RecursionError:
            raise RowProblem(ProblemKind.SYNTAX, "holds a list nested too deeply to read") from None
    return value


def _messages(value: Any, most: int) -> list[dict[str, str]]:
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
                ProblemKind.UNKNOWN_FIELD, f"'{where}' has an unknown field {clipped(sorted(extra)[0], 60)!r}"
            )
        role = _text(message.get("role"), f"{where}.role", required=True, most=most)
        if role not in ROLES:
            raise RowProblem(
                ProblemKind.UNKNOWN_ROLE,
                f"'{where}.role' is {clipped(role, 40)!r}; it must be one of {', '.join(ROLES)}",
            )
        content = _text(message.get("content"), f"{where}.content", required=True, most=most)
        messages.append({"role": role, "content": content})
    return messages


def _choices(value: Any, most: int) -> list[str]:
    value = _maybe_json(value)
    if value is None:
        raise RowProblem(ProblemKind.MISSING, "'choices' is missing")
    if not isinstance(value, list):
        raise RowProblem(ProblemKind.WRONG_TYPE, f"'choices' must be a list, not {_type_name(value)}")
    if len(value) < 2:
        raise RowProblem(ProblemKind.EMPTY, "'choices' needs at least two choices")
    return [_text(choice, f"choices[{i}]", required=True, most=most) for i, choice in enumerate(value)]


def _answer(value: Any, choices: list[str]) -> int:
    """An answer index; also accepted: a letter ("B") or a digit string, as CSV files write them."""
    if value is None:
        raise RowProblem(ProblemKind.MISSING, "'answer' is missing")
    if isinstance(value, LongNumber):
        raise RowProblem(
            ProblemKind.BAD_ANSWER,
            f"'answer' is a number of {value.digits:,} digits, not one of the {len(choices)} choices",
        )
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


def row_normalize(row: Any, layout: Layout, *, max_field_bytes: int) -> dict[str, Any]:
    """The row in the normalized layout, or RowProblem saying what is wrong with it.

    No text value of it may hold more than ``max_field_bytes`` bytes.
    """
    if not isinstance(row, dict):
        raise RowProblem(
            ProblemKind.NOT_AN_OBJECT, f"must be an object with the {layout.schema.value} fields"
        )
    names = fields_of(layout.schema)
    sources = {layout.source_of(name): name for name in names}
    for column in row:
        if column not in sources:
            raise RowProblem(
                ProblemKind.UNKNOWN_FIELD,
                f"{clipped(column, 60)!r} is not a field of the {layout.schema.value} schema",
            )
    values = {name: row.get(layout.source_of(name)) for name in names}
    optional = OPTIONAL_FIELDS.get(layout.schema, frozenset())
    most = max_field_bytes
    if layout.schema is DatasetSchema.CHAT:
        return {"messages": _messages(values["messages"], most)}
    if layout.schema is DatasetSchema.MULTIPLE_CHOICE:
        question = _text(values["question"], "question", required=True, most=most)
        choices = _choices(values["choices"], most)
        return {"question": question, "choices": choices, "answer": _answer(values["answer"], choices)}
    texts = {name: _text(values[name], name, required=name not in optional, most=most) for name in names}
    if layout.schema is DatasetSchema.PREFERENCE and texts["chosen"] == texts["rejected"]:
        raise RowProblem(
            ProblemKind.NO_PREFERENCE,
            "'chosen' and 'rejected' are the same text; a preference needs two different answers",
        )
    return texts
