"""Reading each file format as a stream of batches, never the whole file at once.

A batch is either an Arrow table parsed in C++ (the fast path: most batches
of a good file) or a list of Python rows, each with its row number, for the
parts Arrow could not parse in one go (a bad line, a blank line). Both say
where each row is in the file, so a problem names a row a person can find.
"""

from __future__ import annotations

import codecs
import io
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from controlplane.datasets.ingest.problems import IngestRefused, ProblemKind, ReadStopped, clipped
from controlplane.datasets.ingest.schemas import json_int
from controlplane.datasets.ingest.sources import FileFormat, Limits, OpenedSource, hf_dataset_files, read_into

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

BLOCK_BYTES = 8 * 1024 * 1024
PY_BATCH_ROWS = 10_000
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


def batches_read(source: OpenedSource, limits: Limits, hints: ParseHints | None = None) -> Iterator[RawBatch]:
    """The file's rows, batch by batch. A row longer than ``limits.max_line_bytes`` is never held whole:
    it is a bad row, or, where the reader cannot get past it, ``ReadStopped`` naming it."""
    match source.format:
        case FileFormat.JSONL:
            assert source.stream is not None
            yield from _jsonl_batches(source.stream, hints or ParseHints(), limits.max_line_bytes)
        case FileFormat.JSON:
            assert source.stream is not None
            yield from _json_array_batches(source.stream, limits.max_line_bytes)
        case FileFormat.CSV:
            assert source.stream is not None
            yield from _csv_batches(source.stream, limits.max_line_bytes)
        case FileFormat.PARQUET:
            assert source.path is not None
            yield from _parquet_batches(source.path)
        case FileFormat.HF_DATASET:
            assert source.path is not None
            yield from _hf_batches(source.path)


# --- JSONL ----------------------------------------------------------------------


class _LineTooLong(Exception):
    """The line after the last block handed on runs past the bound without ending."""


def _jsonl_blocks(stream: io.BufferedIOBase, max_line_bytes: int) -> Iterator[memoryview]:
    """Blocks of whole lines, each ending in a newline (the last one may not).

    Each block is read into a buffer of its own, after the cut-off line carried
    over from the one before, and handed on as a view: a block is never copied
    once read. A carried-over line longer than ``max_line_bytes`` raises
    ``_LineTooLong`` instead of being read on: held whole, one endless line (a
    decompressed bomb has no newline) would fill the memory.
    """
    rest = b""
    first = True
    while True:
        if len(rest) > max_line_bytes:
            raise _LineTooLong
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
        return json.loads(text, parse_int=json_int)
    except json.JSONDecodeError as exc:
        return (ProblemKind.SYNTAX, f"is not valid JSON ({exc.msg})")
    except RecursionError:
        return (ProblemKind.SYNTAX, TOO_DEEP)


def _lines_parse(
    block: memoryview,
    first_row: int,
    deep: frozenset[int] = frozenset(),
    large: dict[int, str] | None = None,
) -> list[tuple[int, Any]]:
    """Each non-blank line of the block parsed on its own, with its line number.

    ``deep`` and ``large`` lines are reported without being parsed, ``large`` with the reason.
    """
    rows = []
    large = large or {}
    for offset, line in enumerate(bytes(block).split(b"\n")):
        if offset in deep:
            rows.append((first_row + offset, (ProblemKind.SYNTAX, TOO_DEEP)))
        elif offset in large:
            rows.append((first_row + offset, (ProblemKind.TOO_LARGE, large[offset])))
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


def _large_lines(shape: _BlockShape, max_line_bytes: int) -> dict[int, str]:
    """Lines (indexes from 0) longer than the bound, with what is wrong with each."""
    lengths = np.diff(shape.starts) - 1  # without the newline
    return {
        int(index): f"is {int(lengths[index]):,} bytes long; the most a line may hold is {max_line_bytes:,}"
        for index in np.flatnonzero(lengths > max_line_bytes)
    }


def _jsonl_batches(stream: io.BufferedIOBase, hints: ParseHints, max_line_bytes: int) -> Iterator[RawBatch]:
    line_number = 1
    try:
        for block in _jsonl_blocks(stream, max_line_bytes):
            shape = _block_shape(block)
            large = _large_lines(shape, max_line_bytes)
            table = None
            # Arrow's parser lets bad UTF-8 through (in keys and strings alike), so the block is
            # checked whole first; a bad line is then named by the row-by-row path.
            if not shape.deep and not large and _utf8_valid(block) and _one_value_per_line(block, shape):
                table = _jsonl_parse(block, hints)
            if table is not None and table.num_rows == shape.lines:
                yield RawBatch(first_row=line_number, table=table, lines=block)
            else:
                yield RawBatch(
                    first_row=line_number, rows=_lines_parse(block, line_number, shape.deep, large)
                )
            line_number += shape.lines
    except _LineTooLong:
        # Every line before it was handed on: this one is the next.
        raise ReadStopped(
            ProblemKind.TOO_LARGE,
            f"line {line_number}",
            f"is longer than {max_line_bytes:,} bytes, the most a line may hold",
        ) from None


# --- a JSON array -----------------------------------------------------------------


_SPACES = re.compile(r"[ \t\r\n]*")


def _json_array_batches(stream: IO[bytes], max_element_bytes: int) -> Iterator[RawBatch]:
    """The elements of a top-level JSON array, decoded one at a time from a sliding buffer.

    The array must be whole: elements separated by single commas, closed by its
    ``]``, and nothing but spaces after it. A second array or object after it,
    or an array cut short, would otherwise lose rows without a word.
    """
    decoder = json.JSONDecoder(parse_int=json_int)
    reader = _utf8_chunks(stream)
    buffer = ""
    position = 0
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

    def next_char() -> str | None:
        """The next character that is not a space (reading on as needed), or None at the end."""
        nonlocal position
        while True:
            match = _SPACES.match(buffer, position)
            assert match is not None  # the pattern matches the empty string
            position = match.end()
            if position < len(buffer):
                return buffer[position]
            if exhausted or not fill():
                return None

    first = next_char()
    if first is None:
        raise IngestRefused("The JSON file is empty.")
    if first != "[":
        raise IngestRefused("The JSON file is not an array of rows; send one JSON object per line (JSONL).")
    position += 1
    index = 1  # the number of the next row
    after_row = False
    rows: list[tuple[int, Any]] = []
    while True:
        char = next_char()
        if char is None:
            raise IngestRefused(
                f"The JSON array ends after row {index - 1} without its closing ']': the file may be cut "
                "short. Nothing was stored."
            )
        if after_row:
            if char == "]":
                break
            if char != ",":
                raise IngestRefused(
                    f"row {index}: a comma is missing before it; the rest of the file cannot be read."
                )
            position += 1
            after_row = False
            if next_char() == "]":
                raise IngestRefused(
                    f"The JSON array ends in a comma after row {index - 1}; remove the comma."
                )
            continue
        if char == "]" and index == 1:
            break  # an empty array: refused later as a file with no rows
        if char in ",]":
            raise IngestRefused(
                f"row {index}: is missing: the array has a {char!r} where a row belongs; "
                "the rest of the file cannot be read."
            )
        try:
            value, end = decoder.raw_decode(buffer, position)
        except RecursionError:
            raise IngestRefused(
                f"row {index}: is nested too deeply to read; the rest of the file cannot be read."
            ) from None
        except json.JSONDecodeError as exc:
            # An element cut off by the end of the buffer (a string running to it, or an error
            # at its last few characters) is read on and tried again, up to the bound on a row,
            # so that no row is held past it; any other error is the row's own.
            if not exhausted and (exc.pos >= len(buffer) - 6 or exc.msg.startswith("Unterminated string")):
                if len(buffer) - position > max_element_bytes:
                    raise ReadStopped(
                        ProblemKind.TOO_LARGE,
                        f"row {index}",
                        f"is longer than {max_element_bytes:,} bytes, the most a row may hold",
                    ) from None
                if fill():
                    continue
            raise IngestRefused(
                f"row {index}: is not valid JSON ({exc.msg}); the rest of the file cannot be read."
            ) from exc
        # A number or literal cut at the buffer's end would decode short; make sure it ended.
        if end == len(buffer) and not exhausted and fill():
            continue
        # Only a row of more than a quarter of the bound can be over it (4 bytes a character at most).
        if (end - position) * 4 > max_element_bytes:
            size = len(buffer[position:end].encode("utf-8", errors="surrogatepass"))
            if size > max_element_bytes:
                value = (
                    ProblemKind.TOO_LARGE,
                    f"is {size:,} bytes long; the most a row may hold is {max_element_bytes:,}",
                )
        rows.append((index, value))
        index += 1
        position = end
        after_row = True
        if len(rows) >= PY_BATCH_ROWS:
            yield RawBatch(first_row=rows[0][0], rows=rows)
            rows = []
    _nothing_after(buffer[position + 1 :], reader, rows=index - 1)
    if rows:
        yield RawBatch(first_row=rows[0][0], rows=rows)


def _nothing_after(rest: str, reader: Iterator[str], *, rows: int) -> None:
    """Only spaces may follow the array's end: whatever else is there would be dropped unread."""
    for text in itertools.chain([rest], reader):
        if text.strip(" \t\r\n"):
            raise IngestRefused(
                f"The JSON file goes on after its array of {rows} row(s) ends "
                f"({clipped(text.strip(), 40)!r}); send one array, or one object per line (JSONL)."
            )


def _utf8_chunks(stream: IO[bytes]) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    while chunk := stream.read(BLOCK_BYTES):
        try:
            yield decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise IngestRefused("The JSON file is not UTF-8 text.") from exc
    yield decoder.decode(b"", final=True)


# --- CSV, Parquet, saved Hugging Face datasets ------------------------------------------


class _CsvRecordBound(io.RawIOBase):
    """The CSV bytes as read, refused once one record runs past the bound.

    Arrow's CSV reader holds a record whole, however long, so one endless
    field would fill the memory before any row could be checked. A record ends
    at a line end (LF or CR) outside quotes, and a doubled quote inside a
    quoted field flips the count twice, so the parity of the quotes seen tells
    quoted from not (the quoting Arrow reads by default). Counted with numpy,
    a block at a time, from where its line ends and quotes are; lines are
    counted by their LF.
    """

    def __init__(self, raw: IO[bytes], max_record_bytes: int) -> None:
        self._raw = raw
        self._most = max_record_bytes
        self._quoted = False
        self._current = 0  # bytes of the record being read
        self.lines = 1  # the line the record being read starts on
        self._lines_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        data = read_into(self._raw, buffer)
        if not data:
            return 0
        array = np.frombuffer(data, dtype=np.uint8)
        breaks = np.flatnonzero((array == _NEWLINE[0]) | (array == _CR[0]))
        newlines = breaks[array[breaks] == _NEWLINE[0]]
        quotes = np.flatnonzero(array == _QUOTE)
        ends = breaks
        if len(quotes) or self._quoted:
            # A line end is inside quotes when an odd number of quotes came before it.
            ends = breaks[(np.searchsorted(quotes, breaks) + self._quoted) % 2 == 0]
        self._quoted = bool((len(quotes) + self._quoted) % 2)
        if len(ends):
            if self._current + int(ends[0]) + 1 > self._most:
                raise _RecordTooLong(self.lines)
            over = np.flatnonzero(np.diff(ends) > self._most)
            if len(over):
                raise _RecordTooLong(self._line_after(newlines, int(ends[over[0]])))
            self.lines = self._line_after(newlines, int(ends[-1]))
            self._current = len(array) - int(ends[-1]) - 1
        else:
            self._current += len(array)
        self._lines_read += len(newlines)
        if self._current > self._most:
            raise _RecordTooLong(self.lines)
        return len(data)

    def _line_after(self, newlines: np.ndarray, end: int) -> int:
        """The line of the file that a record starting right after this block's byte ``end`` starts on."""
        return self._lines_read + int(np.searchsorted(newlines, end, side="right")) + 1


class _RecordTooLong(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


_QUOTE = ord('"')


def _csv_batches(stream: IO[bytes], max_record_bytes: int) -> Iterator[RawBatch]:
    """Every CSV cell is read as text; lists (chat messages, choices) are JSON text in their cell."""
    bounded = _CsvRecordBound(stream, max_record_bytes)
    try:
        reader = pa_csv.open_csv(
            bounded,
            read_options=pa_csv.ReadOptions(block_size=BLOCK_BYTES),
            convert_options=pa_csv.ConvertOptions(
                strings_can_be_null=False, quoted_strings_can_be_null=False
            ),
        )
        schema = reader.schema
        _header_check(schema.names)
        as_text = pa.schema([(name, pa.string()) for name in schema.names])
        row = 1
        for batch in reader:
            table = pa.Table.from_batches([batch]).cast(as_text)
            yield RawBatch(
                first_row=row,
                rows=list(zip(range(row, row + table.num_rows), table.to_pylist(), strict=True)),
            )
            row += table.num_rows
    except _RecordTooLong as exc:
        where = "the header" if exc.line == 1 else f"the row starting on line {exc.line}"
        raise ReadStopped(
            ProblemKind.TOO_LARGE,
            where,
            f"is longer than {max_record_bytes:,} bytes, the most a row may hold",
        ) from None
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise IngestRefused(f"The CSV file could not be read: {clipped(str(exc))}") from exc


def _header_check(names: list[str]) -> None:
    """Each column once: a row read as a mapping keeps only the last of two columns of one name."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise IngestRefused(
                f"The CSV header names the column {clipped(name, 60)!r} {names.count(name)} times; "
                "give each column a name of its own."
            )
        seen.add(name)


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
