"""Reading a dataset file of any supported format into normalized, validated Parquet,
and working on that Parquet afterwards.

This package imports no Django: the control worker runs it, and so do the
benchmarks. ``pipeline.ingest`` is the entry point of an upload; the other
modules are its parts (where bytes come from, what a row of each schema must
hold, the statistics, the content hash). ``curation`` holds dedup, splits, the
contamination check and the PII scan of a stored version.
"""
