"""One pass over a dataset file: read, check every row, write normalized Parquet, hash, count.

Memory stays bounded by one batch (a few MB of input) plus the Parquet
writer's current row group, whatever the size of the file. A file with any
bad row raises ``RowsInvalid`` with the report, after reading to the end so
the report counts every problem; the caller then throws the output away.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from controlplane.datasets.ingest.problems import IngestRefused, ProblemKind, ProblemReport, RowsInvalid
from controlplane.datasets.ingest.readers import RawBatch, batches_read, row_label
from controlplane.datasets.ingest.schemas import (
    ARROW_SCHEMAS,
    Layout,
    RowProblem,
    Schema,
    layout_choose,
    row_normalize,
    table_normalize,
)
from controlplane.datasets.ingest.sources import Limits, OpenedSource, source_open
from controlplane.datasets.ingest.stats import ContentHash, StatsBuilder, TokenCounter, row_texts

ROW_GROUP_ROWS = 128 * 1024
ProgressCallback = Callable[[float], None]


@dataclass(frozen=True)
class IngestOptions:
    schema: Schema | None = None
    # schema field -> the file's column, for files whose columns have other names
    mapping: Mapping[str, str] | None = None
    token_counter: TokenCounter | None = None
    # Rows longer than this many tokens are refused (needs ``token_counter``).
    max_tokens: int | None = None
    examples_per_kind: int = 20
    limits: Limits = Limits()


@dataclass(frozen=True)
class IngestResult:
    schema: Schema
    file_format: str
    compression: str
    row_count: int
    sha256: str
    stats: dict[str, Any]
    parquet_path: Path
    parquet_bytes: int


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
    source = source_open(path, filename=filename, limits=options.limits, unpack_dir=unpack_dir)
    try:
        return _ingest_source(source, output=output, options=options, on_progress=on_progress)
    except (pa.ArrowException, UnicodeDecodeError, EOFError, OSError) as exc:
        # A decompressor or reader failing mid-file: the file is corrupt, not our bug.
        raise IngestRefused(f"The file could not be read to its end: {exc}") from exc
    finally:
        source.close()


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
    batches: Iterator[RawBatch] = batches_read(source)
    label = row_label(source.format)
    report = ProblemReport(examples_per_kind=options.examples_per_kind)
    layout: Layout | None = None
    writer: pq.ParquetWriter | None = None
    pending: list[pa.Table] = []
    pending_rows = 0
    hasher: ContentHash | None = None
    stats: StatsBuilder | None = None
    last_report = 0.0

    for batch in batches:
        if layout is None:
            columns = _first_columns(batch)
            if not columns and not batch.table:
                # Nothing parseable yet (all bad lines): still count them, under the file's only hope.
                layout = Layout(
                    schema=options.schema or Schema.INSTRUCTION, mapping=dict(options.mapping or {})
                )
            else:
                layout = layout_choose(columns, schema=options.schema, mapping=options.mapping or {})
            hasher = ContentHash(layout.schema)
            stats = StatsBuilder(layout.schema, token_counter=options.token_counter)
            writer = pq.ParquetWriter(output, ARROW_SCHEMAS[layout.schema], compression="snappy")
        assert hasher is not None and stats is not None and writer is not None

        table = _batch_normalize(batch, layout, report, label)
        if table is not None and options.max_tokens and options.token_counter is not None:
            table = _long_rows_drop(table, batch, layout, options, report, label)
        if table is not None and table.num_rows and not report.total:
            # Once a row has failed the file will not be stored: keep counting problems, stop writing.
            hasher.add(table)
            stats.add(table)
            pending.append(table)
            pending_rows += table.num_rows
            if pending_rows >= ROW_GROUP_ROWS:
                writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                pending, pending_rows = [], 0
        now = time.monotonic()
        if on_progress is not None and now - last_report > 0.5:
            on_progress(min(source.consumed() / max(source.total_bytes, 1), 0.999))
            last_report = now

    if writer is None or layout is None or hasher is None or stats is None:
        raise RowsInvalid("The file has no rows; nothing was stored.")
    if pending and not report.total:
        writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
    writer.close()
    if report.total:
        raise RowsInvalid(report.summary(), report=report.as_dict())
    if stats.rows == 0:
        raise RowsInvalid("The file has no rows; nothing was stored.")
    if on_progress is not None:
        on_progress(1.0)
    return IngestResult(
        schema=layout.schema,
        file_format=source.format.value,
        compression=source.compression.value,
        row_count=stats.rows,
        sha256=hasher.hexdigest(),
        stats=stats.result(),
        parquet_path=output,
        parquet_bytes=output.stat().st_size,
    )


def _batch_normalize(batch: RawBatch, layout: Layout, report: ProblemReport, label: str) -> pa.Table | None:
    if batch.table is not None:
        fast = table_normalize(batch.table, layout)
        if fast is not None:
            return fast
        # Something in the batch needs naming: check it row by row.
        rows = list(
            zip(
                range(batch.first_row, batch.first_row + batch.table.num_rows),
                batch.table.to_pylist(),
                strict=True,
            )
        )
        rows = [(n, {k: v for k, v in row.items() if v is not None}) for n, row in rows]
    else:
        rows = batch.rows
    good = []
    for number, value in rows:
        if isinstance(value, tuple):
            kind, reason = value
            report.add(kind, f"{label} {number}", reason)
            continue
        try:
            good.append(row_normalize(value, layout))
        except RowProblem as problem:
            report.add(problem.kind, f"{label} {number}", problem.reason)
    if report.total:
        return None
    return pa.Table.from_pylist(good, schema=ARROW_SCHEMAS[layout.schema])


def _long_rows_drop(
    table: pa.Table,
    batch: RawBatch,
    layout: Layout,
    options: IngestOptions,
    report: ProblemReport,
    label: str,
) -> pa.Table:
    """Refuse rows over the token limit. Only whole, good batches get here, so row numbers line up."""
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
    return table
