"""One pass over a dataset file: read, check every row, write normalized Parquet, hash, count.

Memory stays bounded by one batch (a few MB of input; no row of a text
file is held past ``Limits.max_line_bytes``) plus the Parquet writer's
current row group, whatever the size of the file or how far it expands. A
file with any bad row raises ``RowsInvalid`` with the report, after reading
to the end (or to a row too long to read past) so the report counts every
problem; the caller then throws the output away.
"""

from __future__ import annotations

import queue
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from controlplane.datasets.ingest.problems import (
    IngestRefused,
    ProblemKind,
    ProblemReport,
    ReadStopped,
    RowsInvalid,
)
from controlplane.datasets.ingest.readers import ParseHints, RawBatch, batches_read, row_label
from controlplane.datasets.ingest.schemas import (
    ARROW_SCHEMAS,
    Layout,
    RowProblem,
    layout_choose,
    row_normalize,
    table_normalize,
)
from controlplane.datasets.ingest.sources import Limits, OpenedSource, source_open
from controlplane.datasets.ingest.stats import ContentHash, StatsBuilder, TokenCounter, row_texts
from workers.spec import DatasetSchema

ROW_GROUP_ROWS = 128 * 1024
# pyarrow imports pandas (where installed) on its first conversion of a Python value, about
# half a second of CPU; a worker pays that once, when it loads this module, not in an upload.
pa.scalar(0)
ProgressCallback = Callable[[float], None]


@dataclass(frozen=True)
class IngestOptions:
    schema: DatasetSchema | None = None
    # schema field -> the file's column, for files whose columns have other names
    mapping: Mapping[str, str] | None = None
    token_counter: TokenCounter | None = None
    # Rows longer than this many tokens are refused (needs ``token_counter``).
    max_tokens: int | None = None
    examples_per_kind: int = 20
    limits: Limits = Limits()


@dataclass(frozen=True)
class IngestResult:
    schema: DatasetSchema
    file_format: str
    compression: str
    row_count: int
    sha256: str
    stats: dict[str, Any]
    parquet_path: Path
    parquet_bytes: int


class RowSink:
    """Hashes, counts and writes good rows on a thread of its own, in the order they come.

    Parsing (on the calling thread and Arrow's pool) then overlaps hashing,
    statistics and Parquet compression: hashlib and Arrow release the GIL for
    large buffers. At most a few batches wait in the queue, which bounds the
    memory this adds; rows are gathered into row groups of ROW_GROUP_ROWS.
    """

    def __init__(self, path: Path, schema: DatasetSchema, *, token_counter: TokenCounter | None) -> None:
        self.hasher = ContentHash(schema)
        self.stats = StatsBuilder(schema, token_counter=token_counter)
        # No dictionaries or min/max statistics: rows of text rarely repeat, and nothing reads
        # the statistics of a text column; both only cost time on every page.
        self._writer = pq.ParquetWriter(
            path,
            ARROW_SCHEMAS[schema],
            compression="snappy",
            use_dictionary=False,
            write_statistics=False,
        )
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._queue: queue.Queue[pa.Table | None] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ingest-sink", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (table := self._queue.get()) is not None:
            if self._error is not None:
                continue
            try:
                self.hasher.add(table)
                self.stats.add(table)
                self._pending.append(table)
                self._pending_rows += table.num_rows
                if self._pending_rows >= ROW_GROUP_ROWS:
                    self._flush()
            except BaseException as exc:  # handed to the ingest's own thread by add() or close()
                self._error = exc

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.concat_tables(self._pending), row_group_size=ROW_GROUP_ROWS)
            self._pending, self._pending_rows = [], 0

    def add(self, table: pa.Table) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(table)

    def close(self, *, raise_error: bool = True) -> None:
        """Finish what is queued and close the file; closing twice is a no-op."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()
            try:
                if self._error is None:
                    self._flush()
            finally:
                self._writer.close()
        if raise_error and self._error is not None:
            raise self._error


def ingest(
    path: Path,
    *,
    filename: str,
    output: Path,
    options: IngestOptions = IngestOptions(),
    on_progress: ProgressCallback | None = None,
    workdir: Path | None = None,
) -> IngestResult:
    """Ingest the file at ``path`` (uploaded as ``filename``) into Parquet at ``output``."""
    unpack_dir = (workdir or output.parent) / "unpacked"
    source: OpenedSource | None = None
    try:
        # Opening unpacks archives, so it fails on broken files as reading does.
        source = source_open(path, filename=filename, limits=options.limits, unpack_dir=unpack_dir)
        return _ingest_source(source, output=output, options=options, on_progress=on_progress)
    except UNREADABLE as exc:
        # A decompressor, an archive or a reader failing mid-file: the file is corrupt, not our bug.
        raise IngestRefused(f"The file could not be read: {_read_error(exc)}") from exc
    finally:
        if source is not None:
            source.close()


UNREADABLE = (
    pa.ArrowException,
    UnicodeDecodeError,
    EOFError,
    OSError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    tarfile.TarError,
    RecursionError,
)


def _read_error(exc: BaseException) -> str:
    """What went wrong, without the server's paths that an OSError's text carries."""
    if isinstance(exc, FileExistsError | NotADirectoryError | IsADirectoryError):
        return "the archive holds a file and a folder of the same name."
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}."
    if isinstance(exc, RecursionError):
        return "it is nested too deeply."
    return str(exc) or type(exc).__name__


def _first_columns(batch: RawBatch) -> list[str]:
    if batch.table is not None:
        return batch.table.column_names
    for _, value in batch.rows:
        if isinstance(value, dict):
            return list(value)
    return []


def _ingest_source(
    source: OpenedSource, *, output: Path, options: IngestOptions, on_progress: ProgressCallback | None
) -> IngestResult:
    label = row_label(source.format)
    report = ProblemReport(examples_per_kind=options.examples_per_kind)
    layout: Layout | None = None
    sink: RowSink | None = None
    last_report = 0.0
    hints = ParseHints()
    try:
        for batch in _read_until_stopped(batches_read(source, options.limits, hints), report):
            if layout is None:
                layout = _layout_of_first(batch, options)
                sink = RowSink(output, layout.schema, token_counter=options.token_counter)
                hints.columns = _typed_columns(layout)
            assert sink is not None
            table = _batch_normalize(batch, layout, report, label, options.limits.max_field_bytes)
            if table is not None and options.max_tokens and options.token_counter is not None:
                _long_rows_report(table, batch, layout, options, report, label)
            # Once a row has failed the file will not be stored: keep counting problems, stop writing.
            if table is not None and table.num_rows and not report.total:
                sink.add(table)
            now = time.monotonic()
            if on_progress is not None and now - last_report > 0.5:
                on_progress(min(source.consumed() / max(source.total_bytes, 1), 0.999))
                last_report = now
        if sink is not None:
            sink.close()
    finally:
        # On any failure the sink's thread must still end, or it would wait forever.
        if sink is not None:
            sink.close(raise_error=False)

    if report.total:
        raise RowsInvalid(report.summary(), report=report.as_dict())
    if layout is None or sink is None or sink.stats.rows == 0:
        raise RowsInvalid("The file has no rows; nothing was stored.")
    if on_progress is not None:
        on_progress(1.0)
    return IngestResult(
        schema=layout.schema,
        file_format=source.format.value,
        compression=source.compression.value,
        row_count=sink.stats.rows,
        sha256=sink.hasher.hexdigest(),
        stats=sink.stats.result(),
        parquet_path=output,
        parquet_bytes=output.stat().st_size,
    )


def _read_until_stopped(batches: Iterator[RawBatch], report: ProblemReport) -> Iterator[RawBatch]:
    """The batches up to a row the reader cannot get past, which is reported as the last bad row."""
    try:
        yield from batches
    except ReadStopped as stopped:
        report.add(stopped.kind, stopped.where, f"{stopped.reason}; the file was read no further")


def _layout_of_first(batch: RawBatch, options: IngestOptions) -> Layout:
    columns = _first_columns(batch)
    if not columns and not batch.table:
        # Nothing parseable in the first batch (all bad lines): count them against the named
        # schema, or the most common one.
        return Layout(schema=options.schema or DatasetSchema.INSTRUCTION, mapping=dict(options.mapping or {}))
    return layout_choose(columns, schema=options.schema, mapping=options.mapping or {})


def _typed_columns(layout: Layout) -> tuple[tuple[str, pa.DataType], ...]:
    """The file's columns of text, lists of text or messages, with their types, in this layout.

    A multiple-choice answer is left out: a file may write it as a letter, which Arrow would
    refuse as an integer, or as 1.0, which it might take for one.
    """
    schema = ARROW_SCHEMAS[layout.schema]
    return tuple((layout.source_of(f.name), f.type) for f in schema if f.name != "answer")


def _batch_normalize(
    batch: RawBatch, layout: Layout, report: ProblemReport, label: str, max_field_bytes: int
) -> pa.Table | None:
    if batch.table is not None:
        fast = table_normalize(batch.table, layout, max_field_bytes=max_field_bytes)
        if fast is not None:
            return fast
    # Something in the batch needs naming: check it row by row.
    good = []
    for number, value in batch.python_rows():
        if isinstance(value, tuple):
            kind, reason = value
            report.add(kind, f"{label} {number}", reason)
            continue
        try:
            good.append(row_normalize(value, layout, max_field_bytes=max_field_bytes))
        except RowProblem as problem:
            report.add(problem.kind, f"{label} {number}", problem.reason)
    if report.total:
        return None
    return pa.Table.from_pylist(good, schema=ARROW_SCHEMAS[layout.schema])


def _long_rows_report(
    table: pa.Table,
    batch: RawBatch,
    layout: Layout,
    options: IngestOptions,
    report: ProblemReport,
    label: str,
) -> None:
    """Report rows over the token limit. Only whole, good batches get here, so row numbers line up."""
    assert options.token_counter is not None and options.max_tokens is not None
    counts = options.token_counter(row_texts(table, layout.schema).to_pylist())
    numbers = (
        [n for n, _ in batch.rows]
        if batch.table is None
        else range(batch.first_row, batch.first_row + table.num_rows)
    )
    for number, count in zip(numbers, counts, strict=True):
        if count > options.max_tokens:
            report.add(
                ProblemKind.TOO_LONG,
                f"{label} {number}",
                f"is {count} tokens long; the limit is {options.max_tokens}",
            )
