"""Compression bombs read as the control worker reads an upload: refused, in bounded memory.

Each bomb is about 10 MB that expands to 5-10 GB; each is ingested in a
process of its own, whose peak RSS (``ru_maxrss``) is what is judged.
"""

from __future__ import annotations

import dataclasses

import pytest

from bench.ingest_bomb import BOMBS, bomb_write, ingest_in_child

PEAK_RSS_MB = 500


@pytest.mark.parametrize(
    "kind, refusal",
    [
        ("zeros", "line 1: is longer than 1,048,576 bytes, the most a line may hold"),
        ("rows", "expands more than 100 times its compressed size (a compression bomb?)"),
        ("csv_field", "the row starting on line 2: is longer than 1,048,576 bytes"),
        ("json_element", "row 1: is longer than 1,048,576 bytes"),
    ],
)
def test_a_ten_megabyte_bomb_is_refused_within_500_mb_of_memory(tmp_path, kind, refusal):
    from controlplane.datasets.services.operations import upload_limits

    _, _, filename = BOMBS[kind]
    path = tmp_path / filename
    assert bomb_write(path, kind, 10 * 1024**2) > 4 * 1024**3
    outcome = ingest_in_child(path, filename, dataclasses.asdict(upload_limits()))
    assert outcome["refused"] is not None and refusal in outcome["refused"], outcome
    assert outcome["peak_rss_mb"] < PEAK_RSS_MB, outcome
