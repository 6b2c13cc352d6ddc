"""Reading each file format as a stream of batches, never the whole file at once.

A batch is either an Arrow table parsed in C++ (the fast path: most batches
of a good file) or a list of Python rows, each with its row number, for the
parts Arrow could not parse in one go (a bad line, a blank line). Both say
where each row is in the file, so a problem names a row a person can find.
"""

from __future__ import annotations

import codecs
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from controlplane.datasets.ingest.problems import IngestRefused, ProblemKind
from controlplane.datasets.ingest.sources import FileFormat, OpenedSource, hf_dataset_files

BLOCK_BYTES = 8 * 1024 * 1024
PY_BATCH_ROWS = 10_000
MAX_JSON_ELEMENT_CHARS = 64 * 1024 * 1024
BOM = b"\xef\xbb\xbf"
# Arrow's JSON reader recurses once per level and a few thousand levels crash the
# process (a 20 KB line is enough); no dataset row needs more than a handful.
MAX_JSON_DEPTH = 100
TOO_DEEP = f"is nested more than {MAX_JSON_DEPTH} levels deep"
_JSON_STRING = re.compile(rb'"(?:[^"\\\n]|\\.)*"')


@dataclass
class RawBatch:
    """Rows as read. ``table`` rows are numbered from ``first_row``; ``rows`` carry their own numbers.

    A row of ``rows`` is the parsed value, or a (kind, reason) pair when the
    row could not even be parsed. A JSONL ``table`` keeps its ``lines``, so a
    batch that fails the table checks is read again line by line with Python's
    ``json`` (see ``python_rows``): the messages then say what ``json`` finds,
    whatever Arrow made of a line (a date string is text, a duplicate key's
    last value wins).
    """

    first_row: int
    table: pa.Table | None = None
    rows: list[tuple[int, Any]] = field(default_factory=list)
    lines: memoryview | None = None

    def python_rows(self) -> list[tuple[int, Any]]:
        """Every row of the batch as a Python value with its number, for the row-by-row checks."""
        if self.table is None:
            return self.rows
        if self.lines is not None:
            return _lines_parse(self.lines, self.first_row)
        numbers = range(self.first_row, self.first_row + self.table.num_rows)
        # A column absent from a row reads as null in a table: drop it, as if the key were not there.
        return [
            (n, {k: v for k, v in row.items() if v is not None})
            for n, row in zip(numbers, self.table.to_pylist(), strict=True)
        ]


@dataclass
class ParseHints:
    """What the reader may assume once the first batch has told the layout.

    ``columns`` are the file's columns of text (or lists of text, or chat
    messages) with their types: Arrow parses them as that without guessing
    (a column of dates stays text), and a number or an object where text
    belongs fails the parse, so that block goes to the row-by-row path,
    which names the row.
    """

    columns: tuple[tuple[str, pa.DataType], ...] = ()

    def explicit_schema(self) -> pa.Schema | None:
        # A mapping may read two fields from one column: Arrow takes each name once.
        named = dict(reversed(self.columns))
        return pa.schema(list(named.items())) if named else None


def row_label(file_format: FileFormat) -> str:
    """What a row number counts: lines of a JSONL file, records elsewhere."""
    return "line" if file_format is FileFormat.JSONL else "row"


def batches_read(source: OpenedSource, hints: ParseHints | None = None) -> Iterator[RawBatch]:
    match source.format:
        case FileFormat.JSONL:
            assert source.stream is not None
            yield from _jsonl_batches(source.stream, hints or ParseHints())
        case FileFormat.JSON:
            assert source.stream is not None
            yield from _json_array_batches(source.stream)
        case FileFormat.CSV:
            assert source.stream is not None
            yield from _csv_batches(source.stream)
        case FileFormat.PARQUET:
            assert source.path is not None
            yield from _parquet_batches(source.path)
        case FileFormat.HF_DATASET:
            assert source.path is not None
            yield from _hf_batches(source.path)


# --- JSONL ----------------------------------------------------------------------


def _jsonl_blocks(stream: io.BufferedIOBase) -> Iterator[memoryview]:
    """Blocks of whole lines, each ending in a newline (the last one may not).

    Each block is read into a buffer of its own, after the cut-off line carried
    over from the one before, and handed on as a view: a block is never copied
    once read.
    """
    rest = b""
    first = True
    while True:
        buffer = bytearray(len(rest) + BLOCK_BYTES)
        buffer[: len(rest)] = rest
        view = memoryview(buffer)
        filled = len(rest)
        while filled < len(buffer) and (got := stream.readinto(view[filled:])):
            filled += got
        start = 0
        if first:
            # Editors on Windows start UTF-8 files with a byte-order mark.
            start = len(BOM) if buffer.startswith(BOM) else 0
            first = False
        if filled == len(rest):
            if filled > start:
                yield view[start:filled]
            return
        cut = buffer.rfind(b"\n", start, filled)
        if cut < 0:
            rest = bytes(view[start:filled])
            continue
        rest = bytes(view[cut + 1 : filled])
        yield view[start : cut + 1]


def _too_deep(line: bytes) -> bool:
    """Whether brackets outside strings nest deeper than MAX_JSON_DEPTH on this line."""
    depth = 0
    for byte in line:
        if byte in b"[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif byte in b"]}":
            depth -= 1
    return False


_OPEN_BRACE, _CLOSE_BRACE, _OPEN_BRACKET, _CR, _NEWLINE = b"{", b"}", b"[", b"\r", b"\n"


@dataclass(frozen=True)
class _BlockShape:
    """Where a block's lines are, and which of them Arrow cannot be trusted with.

    Arrow's JSON reader skips blank lines, reads two objects on one line
    (``{..} {..}``) as two rows and an object spread over two lines as one,
    so its row count alone does not prove one row per line. It does once
    every line opens with ``{`` and closes with ``}``: a line can then only
    start a new value (a ``{`` right after a ``}`` that closed something
    inner is a syntax error, and no string spans a newline), so each line
    holds one value or more, and as many rows as lines means exactly one
    each. The other lines are ``suspect``: rare in a real file, and harmless
    when ``json`` reads each as one value.
    """

    lines: int
    starts: np.ndarray  # offset of each line in the block, and of where a line after the last would start
    deep: frozenset[int]  # lines nested too deeply for Arrow (indexes from 0)
    suspect: tuple[int, ...]


def _block_shape(block: memoryview) -> _BlockShape:
    # Vectorized passes over the block; nothing here runs once per line in Python.
    data = np.frombuffer(block, dtype=np.uint8)
    newlines = np.flatnonzero(data == _NEWLINE[0])
    ends_open = bool(len(data)) and data[-1] != _NEWLINE[0]
    lines = len(newlines) + (1 if ends_open else 0)
    starts = np.empty(lines + 1, dtype=np.int64)
    starts[0] = 0
    starts[1 : len(newlines) + 1] = newlines + 1
    if ends_open:
        starts[-1] = len(data) + 1  # as if the block ended in a newline
    firsts = data[starts[:-1]]
    lasts = data[starts[1:] - 2]  # the byte before each line's newline
    # A Windows line ends in "}\r".
    returns = np.flatnonzero(lasts == _CR[0])
    lasts[returns] = data[np.maximum(starts[1:][returns] - 3, 0)]
    suspect = np.flatnonzero(
        (firsts != _OPEN_BRACE[0]) | (lasts != _CLOSE_BRACE[0]) | (starts[1:] - starts[:-1] < 2)
    )
    return _BlockShape(
        lines=lines,
        starts=starts,
        deep=_deep_lines(block, data, newlines, starts, lines, every_line_opens=not len(suspect)),
        suspect=tuple(suspect.tolist()),
    )


def _deep_lines(
    block: memoryview,
    data: np.ndarray,
    newlines: np.ndarray,
    starts: np.ndarray,
    lines: int,
    *,
    every_line_opens: bool,
) -> frozenset[int]:
    """Lines (indexes from 0) whose brackets outside strings nest deeper than MAX_JSON_DEPTH."""
    opens = int(np.count_nonzero(data == _OPEN_BRACE[0])) + int(np.count_nonzero(data == _OPEN_BRACKET[0]))
    # The most any one line can hold: all of them, or, when every line opens with a "{",
    # all but one for each other line. Most blocks stop here.
    most = opens - (lines - 1) if every_line_opens else opens
    if most <= MAX_JSON_DEPTH:
        return frozenset()
    positions = np.flatnonzero((data == _OPEN_BRACE[0]) | (data == _OPEN_BRACKET[0]))
    per_line = np.bincount(np.searchsorted(newlines, positions), minlength=lines)
    deep = set()
    for index in np.flatnonzero(per_line > MAX_JSON_DEPTH).tolist():
        # Only a line with that many brackets is walked, after its strings (whose brackets are
        # only text) are cut out.
        line = bytes(block[starts[index] : starts[index + 1] - 1])
        if _too_deep(_JSON_STRING.sub(b"", line)):
            deep.add(index)
    return frozenset(deep)


def _utf8_valid(block: memoryview) -> bool:
    """Whether the whole block is UTF-8, checked by Arrow's validator without a copy."""
    offsets = pa.py_buffer(np.array([0, len(block)], dtype=np.int32))
    try:
        pa.Array.from_buffers(pa.string(), 1, [None, offsets, pa.py_buffer(block)]).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _line_parse(line: bytes) -> Any:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return (ProblemKind.ENCODING, "is not UTF-8 text")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        return (ProblemKind.SYNTAX, f"is not valid JSON ({exc.msg})")
    except RecursionError:
        return (ProblemKind.SYNTAX, TOO_DEEP)


def _lines_parse(
    block: memoryview, first_row: int, deep: frozenset[int] = frozenset()
) -> list[tuple[int, Any]]:
    """Each non-blank line of the block parsed on its own, with its line number."""
    rows = []
    for offset, line in enumerate(bytes(block).split(b"\n")):
        if offset in deep:
            rows.append((first_row + offset, (ProblemKind.SYNTAX, TOO_DEEP)))
        elif line.strip():
            rows.append((first_row + offset, _line_parse(line)))
    return rows


# Arrow parses a block's sub-blocks on all cores; a row longer than one sub-block makes
# it fail, and the block is then parsed whole on one core.
PARSE_BLOCK_BYTES = 1024 * 1024


def _jsonl_parse(block: memoryview, hints: ParseHints) -> pa.Table | None:
    """The block's rows as a table, or None when Arrow cannot read every line."""
    explicit = hints.explicit_schema()
    parse_options = pa_json.ParseOptions(explicit_schema=explicit) if explicit is not None else None
    buffer = pa.py_buffer(block)
    for block_size in (PARSE_BLOCK_BYTES, len(block) + 1):
        try:
            return pa_json.read_json(
                pa.BufferReader(buffer),
                read_options=pa_json.ReadOptions(block_size=block_size),
                parse_options=parse_options,
            )
        except pa.ArrowException:
            if block_size > len(block):
                return None
    return None


def _one_value_per_line(block: memoryview, shape: _BlockShape) -> bool:
    for index in shape.suspect:
        line = bytes(block[shape.starts[index] : shape.starts[index + 1] - 1])
        if isinstance(_line_parse(line), tuple):
            return False
    return True


def _jsonl_batches(stream: io.BufferedIOBase, hints: ParseHints) -> Iterator[RawBatch]:
    line_number = 1
    for block in _jsonl_blocks(stream):
        shape = _block_shape(block)
        table = None
        # Arrow's parser lets bad UTF-8 through (in keys and strings alike), so the block is
        # checked whole first; a bad line is then named by the row-by-row path.
        if not shape.deep and _utf8_valid(block) and _one_value_per_line(block, shape):
            table = _jsonl_parse(block, hints)
        if table is not None and table.num_rows == shape.lines:
            yield RawBatch(first_row=line_number, table=table, lines=block)
        else:
            yield RawBatch(first_row=line_number, rows=_lines_parse(block, line_number, shape.deep))
        line_number += shape.lines


# --- a JSON array -----------------------------------------------------------------


def _json_array_batches(stream: IO[bytes]) -> Iterator[RawBatch]:
    """The elements of a top-level JSON array, decoded one at a time from a sliding buffer."""
    decoder = json.JSONDecoder()
    buffer = ""
    position = 0
    reader = _utf8_chunks(stream)
    started = False
    index = 1
    rows: list[tuple[int, Any]] = []
    exhausted = False

    def fill() -> bool:
        nonlocal buffer, position, exhausted
        chunk = next(reader, None)
        if chunk is None:
            exhausted = True
            return False
        buffer = buffer[position:] + chunk
        position = 0
        return True

    while True:
        while position < len(buffer) and buffer[position] in " \t\r\n,":
            # Commas between elements are skipped here; a missing one shows up as a decode error.
            if buffer[position] == "," and not started:
                raise IngestRefused("The JSON file is not an array of rows.")
            position += 1
        if position >= len(buffer):
            if exhausted or not fill():
                break
            continue
        if not started:
            if buffer[position] != "[":
                raise IngestRefused(
                    "The JSON file is not an array of rows; send one JSON object per line (JSONL)."
                )
            started = True
            position += 1
            continue
        if buffer[position] == "]":
            break
        try:
            value, end = decoder.raw_decode(buffer, position)
        except RecursionError:
            raise IngestRefused(
                f"row {index}: is nested too deeply to read; the rest of the file cannot be read."
            ) from None
        except json.JSONDecodeError as exc:
            # The element may be cut off at the end of the buffer: read more and try again,
            # up to a bound, so a broken file is not read whole into memory.
            if not exhausted and len(buffer) - position < MAX_JSON_ELEMENT_CHARS and fill():
                continue
            raise IngestRefused(
                f"row {index}: is not valid JSON ({exc.msg}); the rest of the file cannot be read."
            ) from exc
        # A number or literal cut at the buffer's end would decode short; make sure it ended.
        if end == len(buffer) and not exhausted and fill():
            continue
        rows.append((index, value))
        index += 1
        position = end
        if len(rows) >= PY_BATCH_ROWS:
            yield RawBatch(first_row=rows[0][0], rows=rows)
            rows = []
    if not started:
        raise IngestRefused("The JSON file is empty.")
    if rows:
        yield RawBatch(first_row=rows[0][0], rows=rows)


def _utf8_chunks(stream: IO[bytes]) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    while chunk := stream.read(BLOCK_BYTES):
        try:
            yield decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise IngestRefused("The JSON file is not UTF-8 text.") from exc
    yield decoder.decode(b"", final=True)


# --- CSV, Parquet, saved Hugging Face datasets ------------------------------------------


def _csv_batches(stream: IO[bytes]) -> Iterator[RawBatch]:
    """Every CSV cell is read as text; lists (chat messages, choices) are JSON text in their cell."""
    try:
        reader = pa_csv.open_csv(
            stream,
            read_options=pa_csv.ReadOptions(block_size=BLOCK_BYTES),
            convert_options=pa_csv.ConvertOptions(
                strings_can_be_null=False, quoted_strings_can_be_null=False
            ),
        )
        schema = reader.schema
        as_text = pa.schema([(name, pa.string()) for name in schema.names])
        row = 1
        for batch in reader:
            table = pa.Table.from_batches([batch]).cast(as_text)
            yield RawBatch(
                first_row=row,
                rows=list(zip(range(row, row + table.num_rows), table.to_pylist(), strict=True)),
            )
            row += table.num_rows
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise IngestRefused(f"The CSV file could not be read: {exc}") from exc


def _arrow_batches(batches: Iterator[pa.RecordBatch], first: int = 1) -> Iterator[RawBatch]:
    row = first
    for batch in batches:
        if batch.num_rows:
            yield RawBatch(first_row=row, table=pa.Table.from_batches([batch]))
            row += batch.num_rows


def _parquet_batches(path: Path) -> Iterator[RawBatch]:
    try:
        yield from _arrow_batches(pq.ParquetFile(path).iter_batches(batch_size=65_536))
    except (pa.ArrowInvalid, OSError) as exc:
        raise IngestRefused(f"The Parquet file could not be read: {exc}") from exc


def _hf_batches(root: Path) -> Iterator[RawBatch]:
    row = 1
    for file in hf_dataset_files(root):
        try:
            with pa.memory_map(str(file)) as source:
                # save_to_disk writes the Arrow streaming format.
                for batch in _arrow_batches(iter(pa.ipc.open_stream(source)), row):
                    row += batch.table.num_rows if batch.table is not None else 0
                    yield batch
        except (pa.ArrowInvalid, OSError) as exc:
            raise IngestRefused(f"The saved dataset's file {file.name!r} could not be read: {exc}") from exc
