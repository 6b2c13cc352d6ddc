"""Every write to datasets, by concern; the names other modules use are re-exported here.

- ``ingest``: what an upload asks for, staging it, starting its ingest;
- ``versions``: storing a version's content once and numbering it;
- ``operations``: the control worker's operations (ingest, dedup, split, checks), started, run and reconciled.
"""

from __future__ import annotations

from controlplane.datasets.services.ingest import (
    dataset_ingest_create,
    dataset_operation_version,
    dataset_version_create,
    ingest_operation_create,
    ingest_options_check,
    ingest_runs_inline,
    upload_charset_check,
)
from controlplane.datasets.services.operations import (
    dataset_operation_run,
    dataset_operation_send,
    dataset_operation_start,
    dataset_operations_reconcile,
)
from controlplane.datasets.services.versions import dataset_version_record, dataset_version_store

__all__ = [
    "dataset_ingest_create",
    "dataset_operation_run",
    "dataset_operation_send",
    "dataset_operation_start",
    "dataset_operation_version",
    "dataset_operations_reconcile",
    "dataset_version_create",
    "dataset_version_record",
    "dataset_version_store",
    "ingest_operation_create",
    "ingest_options_check",
    "ingest_runs_inline",
    "upload_charset_check",
]
