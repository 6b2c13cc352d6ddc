"""Reading a dataset file of any supported format into normalized, validated Parquet.

This package imports no Django: the control worker runs it, and so do the
benchmarks. ``pipeline.ingest`` is the entry point; the other modules are its
parts (where bytes come from, what a row of each schema must hold, the
statistics, the content hash).
"""
