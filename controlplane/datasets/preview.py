"""Rows of a stored version, a page at a time, read from a local copy of its Parquet file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from django.conf import settings

from controlplane import tracking
from controlplane.datasets.models import DatasetVersion
from controlplane.errors import ValidationFailed

PREVIEW_MAX_ROWS = 100


def version_parquet_path(version: DatasetVersion) -> Path:
    """The version's Parquet file on this machine; versions never change, so a copy never goes stale."""
    folder = Path(settings.VAR_DIR) / "cache" / "datasets" / version.sha256
    found = sorted(folder.rglob("*.parquet")) if folder.exists() else []
    if found:
        return found[0]
    return tracking.artifact_download(version.uri, dst=folder)


def version_rows(*, version: DatasetVersion, offset: int, limit: int) -> list[dict[str, Any]]:
    """Rows ``offset`` to ``offset + limit`` (at most PREVIEW_MAX_ROWS); reads only their row groups."""
    if not version.uri.endswith(".parquet"):
        raise ValidationFailed(
            "This version was stored before previews existed; upload it again to preview it."
        )
    limit = min(limit, PREVIEW_MAX_ROWS)
    parquet = pq.ParquetFile(version_parquet_path(version))
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
