"""Work on a stored, normalized version: dedup, seeded splits, a contamination check, a PII scan.

Each reads the version's Parquet a batch at a time. Dedup and splits write
new normalized Parquet through the same ``RowSink`` as an ingest, so their
outputs are hashed and counted exactly like an upload.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from controlplane.datasets.ingest.pipeline import IngestResult, RowSink
from controlplane.datasets.ingest.stats import row_texts
from workers.spec import DatasetSchema

BATCH_ROWS = 8192
EXAMPLES = 10
EXAMPLE_CHARS = 300
ProgressCallback = Callable[[float], None]
_WORD = re.compile(r"\w+", re.UNICODE)
# Near-dedup tokens: words, and every other visible character on its own, so that "x < y"
# and "x > y", or two rows of emoji, are told apart.
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def _batches(path: Path) -> Iterator[pa.Table]:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS):
        yield pa.Table.from_batches([batch])


def _row_count(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def _short(text: str) -> str:
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + "…"


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _texts_at(path: Path, schema: DatasetSchema, rows: set[int]) -> dict[int, str]:
    """The texts of the given rows (numbered from 1)."""
    found: dict[int, str] = {}
    start = 1
    for table in _batches(path):
        wanted = [r for r in rows if start <= r < start + table.num_rows]
        if wanted:
            texts = row_texts(table.take(pa.array([r - start for r in wanted])), schema).to_pylist()
            found.update(zip(wanted, texts, strict=True))
        start += table.num_rows
        if len(found) == len(rows):
            break
    return found


def _finish(sink: RowSink, schema: DatasetSchema, output: Path) -> IngestResult:
    sink.close()
    return IngestResult(
        schema=schema,
        file_format="parquet",
        compression="none",
        row_count=sink.stats.rows,
        sha256=sink.hasher.hexdigest(),
        stats=sink.stats.result(),
        parquet_path=output,
        parquet_bytes=output.stat().st_size,
    )


# --- dedup ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DedupResult:
    kept: IngestResult
    removed_exact: int
    removed_near: int
    examples: list[dict[str, Any]]
    rows_per_second: float


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.casefold())


def _normalized(value: Any) -> Any:
    """The value with each text's whitespace collapsed and its case folded, lists and objects kept."""
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    if isinstance(value, list):
        return [_normalized(item) for item in value]
    if isinstance(value, dict):
        return {key: _normalized(item) for key, item in value.items()}
    return value


def _exact_key(row: dict[str, Any]) -> bytes:
    """Every field's full text, the multiple-choice answer included, so only true copies share it."""
    text = json.dumps(_normalized(row), ensure_ascii=False, sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def _shingles(words: list[str], size: int = 5) -> set[bytes]:
    if len(words) <= size:
        return {" ".join(words).encode()}
    return {" ".join(words[i : i + size]).encode() for i in range(len(words) - size + 1)}


def dedup(
    source: Path,
    output: Path,
    *,
    schema: DatasetSchema,
    threshold: float = 0.8,
    num_perm: int = 128,
    on_progress: ProgressCallback | None = None,
) -> DedupResult:
    """Keep the first of each group of duplicate rows.

    Exact duplicates: every field the same (a multiple-choice answer included)
    once case is folded and runs of whitespace collapsed.
    Near duplicates: an estimated Jaccard similarity of 5-grams of tokens (words,
    and each other visible character) at or above ``threshold`` (MinHash LSH)
    with a row kept earlier; a multiple-choice row's answer is one of its tokens.
    """
    from datasketch import MinHash, MinHashLSH

    if not 0.0 < threshold <= 1.0:
        raise ValueError("the threshold is a similarity between 0 and 1")
    total = max(_row_count(source), 1)
    started = time.perf_counter()
    # LSH tuned to miss few true pairs; the candidates it over-suggests are then checked
    # against their signatures (kept as 32-bit values: 512 bytes a row at 128 permutations).
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.2, 0.8))
    signatures_kept: dict[int, np.ndarray] = {}
    seen: dict[bytes, int] = {}
    examples: list[dict[str, Any]] = []
    removed_exact = removed_near = 0
    row = 0
    sink = RowSink(output, schema, token_counter=None)
    try:
        for table in _batches(source):
            texts = row_texts(table, schema).to_pylist()
            keys = [_exact_key(value) for value in table.to_pylist()]
            token_lists = [_tokens(text) for text in texts]
            if schema is DatasetSchema.MULTIPLE_CHOICE:
                for tokens, answer in zip(token_lists, table.column("answer").to_pylist(), strict=True):
                    tokens.append(f"answer={answer}")
            signatures = MinHash.bulk([_shingles(tokens) for tokens in token_lists], num_perm=num_perm)
            keep = np.ones(len(texts), dtype=bool)
            for index, (text, key, signature) in enumerate(zip(texts, keys, signatures, strict=True)):
                number = row + index + 1
                first = seen.get(key)
                kind = "exact"
                values = signature.hashvalues.astype(np.uint32)
                if first is None:
                    first = _most_similar(values, lsh.query(signature), signatures_kept, threshold)
                    kind = "near"
                if first is None:
                    seen[key] = number
                    lsh.insert(number, signature, check_duplication=False)
                    signatures_kept[number] = values
                    continue
                keep[index] = False
                if kind == "exact":
                    removed_exact += 1
                else:
                    removed_near += 1
                if sum(1 for e in examples if e["kind"] == kind) < EXAMPLES:
                    examples.append(
                        {
                            "kind": kind,
                            "kept_row": first,
                            "removed_row": number,
                            "removed": _short(text),
                        }
                    )
            sink.add(table.filter(pa.array(keep)))
            row += len(texts)
            if on_progress is not None:
                on_progress(min(row / total, 0.999))
        result = _finish(sink, schema, output)
    finally:
        sink.close(raise_error=False)
    seconds = max(time.perf_counter() - started, 1e-9)
    # The kept side of each example pair, read back now rather than holding every kept text.
    kept = _texts_at(source, schema, {example["kept_row"] for example in examples})
    examples = [{**example, "kept": _short(kept[example["kept_row"]])} for example in examples]
    return DedupResult(result, removed_exact, removed_near, examples, round(row / seconds, 1))


def _most_similar(
    values: np.ndarray, candidates: list[int], signatures: dict[int, np.ndarray], threshold: float
) -> int | None:
    """The earliest candidate whose estimated similarity reaches the threshold, if any."""
    best = None
    for candidate in sorted(candidates):
        if float(np.mean(signatures[candidate] == values)) >= threshold:
            best = candidate
            break
    return best


# --- seeded splits ----------------------------------------------------------------------


def split(
    source: Path,
    outputs: dict[str, Path],
    *,
    schema: DatasetSchema,
    fractions: dict[str, float],
    seed: int,
    on_progress: ProgressCallback | None = None,
) -> dict[str, IngestResult]:
    """Each row goes to one part at random, with the given fractions; the same seed, the same parts."""
    names = list(fractions)
    if set(names) != set(outputs) or any(f < 0 for f in fractions.values()) or not sum(fractions.values()):
        raise ValueError("every part needs an output and a fraction of at least 0")
    bounds = np.cumsum([fractions[n] for n in names]) / sum(fractions.values())
    rng = np.random.default_rng(seed)
    sinks = {name: RowSink(outputs[name], schema, token_counter=None) for name in names}
    total, done = max(_row_count(source), 1), 0
    try:
        for table in _batches(source):
            part = np.searchsorted(bounds, rng.random(table.num_rows), side="right")
            for index, name in enumerate(names):
                chosen = table.filter(pa.array(part == index))
                if chosen.num_rows:
                    sinks[name].add(chosen)
            done += table.num_rows
            if on_progress is not None:
                on_progress(min(done / total, 0.999))
        return {name: _finish(sinks[name], schema, outputs[name]) for name in names}
    finally:
        for sink in sinks.values():
            sink.close(raise_error=False)


# --- contamination -------------------------------------------------------------------------


def _ngrams(words: list[str], n: int) -> set[int]:
    if len(words) < n:
        return set()
    return {hash(" ".join(words[i : i + n])) for i in range(len(words) - n + 1)}


def contamination(
    eval_path: Path,
    train_path: Path,
    *,
    eval_schema: DatasetSchema,
    train_schema: DatasetSchema,
    n: int = 8,
    on_progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Eval rows sharing a word n-gram with any train row.

    The eval set's n-grams are held in memory (eval sets are small); the
    train set streams past them, however large it is.
    """
    grams_of_row: dict[int, set[int]] = {}
    owner: dict[int, list[int]] = {}
    eval_texts: dict[int, str] = {}
    eval_rows = 0
    for table in _batches(eval_path):
        for text in row_texts(table, eval_schema).to_pylist():
            eval_rows += 1
            grams = _ngrams(_words(text), n)
            grams_of_row[eval_rows] = grams
            for gram in grams:
                owner.setdefault(gram, []).append(eval_rows)
            eval_texts[eval_rows] = text
    contaminated: dict[int, int] = {}  # eval row -> first train row it overlaps
    total = max(_row_count(train_path), 1)
    train_row = 0
    for table in _batches(train_path):
        for text in row_texts(table, train_schema).to_pylist():
            train_row += 1
            for gram in _ngrams(_words(text), n):
                for eval_row in owner.get(gram, ()):
                    contaminated.setdefault(eval_row, train_row)
        if on_progress is not None:
            on_progress(min(train_row / total, 0.999))
    rows = sorted(contaminated)
    return {
        "n": n,
        "eval_rows": eval_rows,
        "train_rows": train_row,
        "contaminated_rows": len(rows),
        "fraction": round(len(rows) / eval_rows, 4) if eval_rows else 0.0,
        "examples": [
            {"eval_row": r, "train_row": contaminated[r], "eval": _short(eval_texts[r])}
            for r in rows[:EXAMPLES]
        ],
    }


# --- PII ------------------------------------------------------------------------------------

# Deliberately simple patterns: they flag rows for a person to look at, they do not certify.
PII_PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "phone": r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)|\d{2,4})[ .-]\d{3,4}[ .-]\d{3,4}",
    "ip_address": r"\b(?:\d{1,3}\.){3}\d{1,3}\b",
    "credit_card": r"\b(?:\d{4}[ -]){3}\d{4}\b",
    "iban": r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}\b",
}


def pii_mask(found: str) -> str:
    """The match with its letters and digits hidden but its first and last two: every viewer of
    the project reads the scan's result, so it must not repeat the data it warns about."""
    kept = {0, len(found) - 2, len(found) - 1} if len(found) > 6 else set()
    return "".join(c if i in kept or not c.isalnum() else "*" for i, c in enumerate(found))


def pii_scan(
    source: Path, *, schema: DatasetSchema, on_progress: ProgressCallback | None = None
) -> dict[str, Any]:
    """Rows holding what looks like personal data, by kind, with the first matches masked.

    An example names the row and the match's character offset in the row's text,
    so a person can find it there.
    """
    counts = dict.fromkeys(PII_PATTERNS, 0)
    matches = {kind: 0 for kind in PII_PATTERNS}
    examples: dict[str, list[dict[str, Any]]] = {kind: [] for kind in PII_PATTERNS}
    total = max(_row_count(source), 1)
    row = 0
    for table in _batches(source):
        texts = row_texts(table, schema)
        for kind, pattern in PII_PATTERNS.items():
            # Arrow counts the matches of every row in one pass (RE2); Python looks only at hits.
            found = pc.count_substring_regex(texts, pattern).to_numpy(zero_copy_only=False)
            hits = np.flatnonzero(found)
            counts[kind] += len(hits)
            matches[kind] += int(found.sum())
            for index in hits[: max(EXAMPLES - len(examples[kind]), 0)]:
                text = texts[int(index)].as_py()
                match = re.search(pattern, text)
                examples[kind].append(
                    {
                        "row": row + int(index) + 1,
                        "at": match.start() if match else 0,
                        "match": pii_mask(match.group(0)) if match else "",
                    }
                )
        row += table.num_rows
        if on_progress is not None:
            on_progress(min(row / total, 0.999))
    return {
        "rows": row,
        "kinds": {
            kind: {"rows": counts[kind], "matches": matches[kind], "examples": examples[kind]}
            for kind in PII_PATTERNS
        },
    }
