"""Statistics of normalized rows and their content hash, both built one batch at a time.

Lengths are counted into fixed integer bins, so percentiles are exact and
memory stays bounded however many rows there are. Token lengths need a
tokenizer, which is slow next to everything else here: they are measured on a
sample of rows spread evenly through the file, and the stats say how many.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from controlplane.datasets.ingest.schemas import ARROW_SCHEMAS
from workers.spec import DatasetSchema

# Lengths past this are counted in the last bin.
LENGTH_CAP = 1 << 20
PERCENTILES = (50, 90, 95, 99)
TokenCounter = Callable[[Sequence[str]], Sequence[int]]


def row_texts(table: pa.Table, schema: DatasetSchema) -> pa.ChunkedArray:
    """Each row's text as one string: what a model reads of it, for lengths, dedup and overlap checks."""
    if schema is DatasetSchema.CHAT:
        messages = table.column("messages").combine_chunks()
        contents = pa.ListArray.from_arrays(messages.offsets, pc.struct_field(messages.values, "content"))
        return pa.chunked_array([pc.binary_join(contents, "\n")])
    if schema is DatasetSchema.MULTIPLE_CHOICE:
        choices = pc.binary_join(table.column("choices"), "\n")
        return pc.binary_join_element_wise(table.column("question"), choices, "\n")
    columns = [table.column(name) for name in ARROW_SCHEMAS[schema].names]
    if len(columns) == 1:
        return columns[0]
    return pc.binary_join_element_wise(*columns, "\n")


def _text_lengths(table: pa.Table, schema: DatasetSchema) -> np.ndarray:
    """The length in UTF-8 bytes of each row's text, without building the texts when it can.

    Bytes, not characters: Arrow knows a string's byte length from its offsets,
    where counting characters reads every byte.
    """
    if schema in (DatasetSchema.CHAT, DatasetSchema.MULTIPLE_CHOICE):
        return pc.binary_length(row_texts(table, schema)).to_numpy()
    names = ARROW_SCHEMAS[schema].names
    total = np.full(table.num_rows, len(names) - 1, dtype=np.int64)  # the separators
    for name in names:
        total += pc.binary_length(table.column(name)).to_numpy()
    return total


class LengthHistogram:
    """Exact counts of integer lengths up to LENGTH_CAP."""

    def __init__(self) -> None:
        self._counts = np.zeros(0, dtype=np.int64)

    def add(self, lengths: np.ndarray) -> None:
        if not len(lengths):
            return
        counts = np.bincount(np.minimum(lengths, LENGTH_CAP))
        if len(counts) > len(self._counts):
            counts[: len(self._counts)] += self._counts
            self._counts = counts
        else:
            self._counts[: len(counts)] += counts

    def summary(self, bins: int = 30) -> dict[str, Any]:
        total = int(self._counts.sum())
        if not total:
            return {"count": 0}
        cumulative = np.cumsum(self._counts)
        values = np.arange(len(self._counts))
        percentiles = {
            f"p{p}": int(np.searchsorted(cumulative, total * p / 100, side="left")) for p in PERCENTILES
        }
        top = int(values[self._counts > 0].max())
        edges = np.unique(np.linspace(0, top + 1, bins + 1).astype(np.int64))
        histogram = [int(self._counts[lo:hi].sum()) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
        return {
            "count": total,
            "min": int(values[self._counts > 0].min()),
            "max": top,
            "mean": float((values * self._counts).sum() / total),
            **percentiles,
            "histogram": {"edges": [int(e) for e in edges], "counts": histogram},
        }


class RowSample:
    """Up to ``size`` row texts spread evenly through the rows, whatever their number.

    Every ``stride``-th row is kept; when the sample is full, every other kept
    row is dropped and the stride doubles.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.stride = 1
        self.texts: list[str] = []
        self._seen = 0

    def add(self, texts: pa.ChunkedArray) -> None:
        n = len(texts)
        if not self.size:
            self._seen += n
            return
        start = (-self._seen) % self.stride
        self.texts.extend(texts.take(pa.array(np.arange(start, n, self.stride))).to_pylist())
        self._seen += n
        while len(self.texts) > self.size:
            self.texts = self.texts[::2]
            self.stride *= 2


class StatsBuilder:
    def __init__(
        self, schema: DatasetSchema, *, token_counter: TokenCounter | None, token_sample: int = 20_000
    ) -> None:
        self.schema = schema
        self.rows = 0
        self._filled = dict.fromkeys(ARROW_SCHEMAS[schema].names, 0)
        self._bytes = LengthHistogram()
        self._turns = LengthHistogram()
        self._roles: dict[str, int] = {}
        self._token_counter = token_counter
        self._sample = RowSample(token_sample if token_counter is not None else 0)

    def add(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        for name in self._filled:
            column = table.column(name)
            if pa.types.is_string(column.type):
                filled = pc.sum(pc.greater(pc.binary_length(column), 0)).as_py() or 0
            elif pa.types.is_list(column.type):
                filled = pc.sum(pc.greater(pc.list_value_length(column), 0)).as_py() or 0
            else:
                filled = table.num_rows - column.null_count
            self._filled[name] += filled
        self._bytes.add(_text_lengths(table, self.schema))
        if self._sample.size:
            self._sample.add(row_texts(table, self.schema))
        if self.schema is DatasetSchema.CHAT:
            messages = table.column("messages")
            self._turns.add(pc.list_value_length(messages).to_numpy())
            roles = pc.value_counts(pc.struct_field(pc.list_flatten(messages), "role"))
            for entry in roles.to_pylist():
                self._roles[entry["values"]] = self._roles.get(entry["values"], 0) + entry["counts"]

    def result(self) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "row_count": self.rows,
            "fill_rates": {name: (n / self.rows if self.rows else 0.0) for name, n in self._filled.items()},
            "bytes": self._bytes.summary(),
        }
        if self._token_counter is not None and self._sample.texts:
            tokens = LengthHistogram()
            tokens.add(np.asarray(self._token_counter(self._sample.texts), dtype=np.int64))
            stats["tokens"] = {**tokens.summary(), "sampled_rows": len(self._sample.texts)}
        if self.schema is DatasetSchema.CHAT:
            stats["turns"] = self._turns.summary()
            stats["roles"] = dict(sorted(self._roles.items()))
        return stats


class ContentHash:
    """sha256 of the normalized rows, the same however the rows were split into batches.

    Each leaf column keeps two running digests, one over its value lengths and
    one over its bytes; together they pin the content exactly, and neither
    depends on where one batch ends and the next begins.
    """

    def __init__(self, schema: DatasetSchema) -> None:
        self.schema = schema
        self._digests: dict[str, tuple[Any, Any]] = {}

    def _pair(self, path: str) -> tuple[Any, Any]:
        return self._digests.setdefault(path, (hashlib.sha256(), hashlib.sha256()))

    def add(self, table: pa.Table) -> None:
        for name in table.column_names:
            for chunk in table.column(name).chunks:
                self._array_add(name, chunk)

    def _array_add(self, path: str, array: pa.Array) -> None:
        lengths, values = self._pair(path)
        kind = array.type
        if pa.types.is_string(kind):
            offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[
                array.offset : array.offset + len(array) + 1
            ]
            lengths.update(np.diff(offsets).astype("<i8").tobytes())
            data = array.buffers()[2]
            if data is not None and len(offsets):
                values.update(memoryview(data)[int(offsets[0]) : int(offsets[-1])])
        elif pa.types.is_list(kind):
            lengths.update(pc.list_value_length(array).to_numpy(zero_copy_only=False).astype("<i8").tobytes())
            self._array_add(f"{path}[]", array.flatten())
        elif pa.types.is_struct(kind):
            for field, child in zip(kind, array.flatten(), strict=True):
                self._array_add(f"{path}.{field.name}", child)
        else:
            values.update(array.to_numpy(zero_copy_only=False).astype("<i8").tobytes())

    def hexdigest(self) -> str:
        final = hashlib.sha256(f"tuneyard-rows-v1:{self.schema.value}".encode())
        for path in sorted(self._digests):
            lengths, values = self._digests[path]
            final.update(f"\n{path}:".encode() + lengths.digest() + values.digest())
        return final.hexdigest()
