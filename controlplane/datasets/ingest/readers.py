"""Reading each file format as a stream of batches, never the whole file at once.

A batch is either an Arrow table parsed in C++ (the fast path: most batches
of a good file) or a list of Python rows, each with its row number, for the
parts Arrow could not parse in one go (a bad line, a blank line). Both say
where each row is in the file, so a problem names a row a person can find.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

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
    row could not even be parsed.
    """

    first_row: int
    table: pa.Table | None = None
    rows: list[tuple[int, Any]] = field(default_factory=list)


def row_label(file_format: FileFormat) -> str:
    """What a row number counts: lines of a JSONL file, records elsewhere."""
    return "line" if file_format is FileFormat.JSONL else "row"


def batches_read(source: OpenedSource) -> Iterator[RawBatch]:
    match source.format:
        case FileFormat.JSONL:
            assert source.stream is not None
            yield from _jsonl_batches(source.stream)
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


def _jsonl_blocks(stream: IO[bytes]) -> Iterator[bytes]:
    """Blocks of whole lines, each ending in a newline (the last one may not)."""
    rest = b""
    first = True
    while True:
        chunk = stream.read(BLOCK_BYTES)
        if first:
            # Editors on Windows start UTF-8 files with a byte-order mark.
            chunk = chunk.removeprefix(BOM)
            first = False
        if not chunk:
            if rest:
                yield rest
            return
        data = rest + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            rest = data
            continue
        rest = data[cut + 1 :]
        yield data[: cut + 1]


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


def _deep_lines(block: bytes) -> set[int]:
    """Offsets of the block's lines nested too deeply for Arrow to see.

    Counting brackets is done in C and settles nearly every block; only a line
    with more opening brackets than the limit is walked byte by byte, after its
    strings (whose brackets are only text) are cut out.
    """
    if block.count(b"[") + block.count(b"{") <= MAX_JSON_DEPTH:
        return set()
    deep = set()
    for offset, line in enumerate(block.split(b"\n")):
        if line.count(b"[") + line.count(b"{") > MAX_JSON_DEPTH:
            skeleton = _JSON_STRING.sub(b"", line)
            if _too_deep(skeleton):
                deep.add(offset)
    return deep


def _line_parse(line: bytes) -> Any:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return (ProblemKind.ENCODING, "is not UTF-8 text")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        return (ProblemKind.SYNTAX, f"is not valid JSON ({exc.msg})")


# Arrow parses a block's sub-blocks on all cores; a row longer than one sub-block makes
# it fail, and the block is then parsed whole on one core.
PARSE_BLOCK_BYTES = 1024 * 1024


def _jsonl_parse(block: bytes) -> pa.Table | None:
    """The block's rows as a table, or None when Arrow cannot vouch for every line."""
    for block_size in (PARSE_BLOCK_BYTES, len(block) + 1):
        try:
            table = pa_json.read_json(
                pa.BufferReader(block), read_options=pa_json.ReadOptions(block_size=block_size)
            )
            # Arrow's JSON parser lets bad UTF-8 through inside strings; the full check catches it.
            table.validate(full=True)
            return table
        except pa.ArrowException:
            if block_size > len(block):
                return None
    return None


def _jsonl_batches(stream: IO[bytes]) -> Iterator[RawBatch]:
    line_number = 1
    for block in _jsonl_blocks(stream):
        lines = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
        deep = _deep_lines(block)
        table = None if deep else _jsonl_parse(block)
        # Arrow skips blank lines silently, which would shift row numbers: only a
        # block with one row per line takes the fast path. Otherwise the slow path
        # below names every bad line.
        if table is not None and table.num_rows == lines:
            yield RawBatch(first_row=line_number, table=table)
        else:
            rows = []
            for offset, line in enumerate(block.split(b"\n")[:lines]):
                if offset in deep:
                    rows.append((line_number + offset, (ProblemKind.SYNTAX, TOO_DEEP)))
                elif line.strip():
                    rows.append((line_number + offset, _line_parse(line)))
            yield RawBatch(first_row=line_number, rows=rows)
        line_number += lines


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
    import codecs

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


def _parquet_batches(path) -> Iterator[RawBatch]:  # type: ignore[no-untyped-def]
    try:
        yield from _arrow_batches(pq.ParquetFile(path).iter_batches(batch_size=65_536))
    except (pa.ArrowInvalid, OSError) as exc:
        raise IngestRefused(f"The Parquet file could not be read: {exc}") from exc


def _hf_batches(root) -> Iterator[RawBatch]:  # type: ignore[no-untyped-def]
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
