"""Rows of a stored version, a page at a time, read from a local copy of its Parquet file."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings

from controlplane import tracking
from controlplane.datasets.models import DatasetVersion
from controlplane.errors import ServiceUnavailable, ValidationFailed

PREVIEW_MAX_ROWS = 100
# A page shows a cell up to this many characters: a page of 20 rows stays small whatever the
# rows hold. The rows API gives every cell whole.
PREVIEW_CELL_CHARS = 2_000


def version_parquet_path(version: DatasetVersion) -> Path:
    """The version's Parquet file on this machine; versions never change, so a copy never goes stale."""
    cache = Path(settings.VAR_DIR) / "cache" / "datasets"
    folder = cache / version.sha256
    found = sorted(folder.rglob("*.parquet")) if folder.exists() else []
    if found:
        try:
            # Reading the footer costs little and catches a copy cut short before it was
            # downloaded atomically; the operations read the copy too.
            pq.read_metadata(found[0])
            return found[0]
        except (pa.ArrowException, OSError):
            shutil.rmtree(folder, ignore_errors=True)
    # Downloaded beside the entry, then renamed into place in one step: an interrupted or
    # concurrent download never leaves a partial file where readers look for a whole one.
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        staging = Path(tmp) / "copy"
        relative = tracking.artifact_download(version.uri, dst=staging).relative_to(staging)
        try:
            os.rename(staging, folder)
        except OSError:
            # Another download got there first; versions never change, so its copy is as good.
            pass
    return folder / relative


def version_cache_drop(version: DatasetVersion) -> None:
    """Forget the local copy, so that the next read downloads it again."""
    shutil.rmtree(Path(settings.VAR_DIR) / "cache" / "datasets" / version.sha256, ignore_errors=True)


def version_rows(*, version: DatasetVersion, offset: int, limit: int) -> list[dict[str, Any]]:
    """Rows ``offset`` to ``offset + limit`` (at most PREVIEW_MAX_ROWS); reads only their row groups."""
    if not version.uri.endswith(".parquet"):
        raise ValidationFailed(
            "This version was stored before previews existed; upload it again to preview it."
        )
    limit = min(limit, PREVIEW_MAX_ROWS)
    path = version_parquet_path(version)
    try:
        return _rows_read(path, offset=offset, limit=limit)
    except (pa.ArrowException, OSError):
        # A damaged copy (Arrow reports a bad page as a plain OSError): drop it so the next
        # read fetches it again, rather than failing on it forever.
        version_cache_drop(version)
        raise ServiceUnavailable(
            "The local copy of this version could not be read; it was dropped. Try again."
        ) from None


def _rows_read(path: Path, *, offset: int, limit: int) -> list[dict[str, Any]]:
    parquet = pq.ParquetFile(path)
    rows: list[dict[str, Any]] = []
    start = 0
    for group in range(parquet.num_row_groups):
        size = parquet.metadata.row_group(group).num_rows
        if start + size > offset and len(rows) < limit:
            table = parquet.read_row_group(group)
            skip = max(offset - start, 0)
            rows.extend(table.slice(skip, limit - len(rows)).to_pylist())
        start += size
        if len(rows) >= limit:
            break
    return rows


def cell_preview(value: Any, most: int = PREVIEW_CELL_CHARS) -> str:
    """A cell as a page shows it: its text, cut after ``most`` characters, saying how many were left out."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= most:
        return text
    return f"{text[:most]}… ({len(text) - most:,} more characters)"
