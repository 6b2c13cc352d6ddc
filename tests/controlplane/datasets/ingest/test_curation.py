"""Dedup, splits, the contamination check and the PII scan, on normalized Parquet."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from controlplane.datasets.ingest import curation
from controlplane.datasets.ingest.pipeline import ingest
from workers.spec import DatasetSchema

WORDS = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()
)


def _sentence(rng: random.Random, n: int = 30) -> str:
    return " ".join(rng.choice(WORDS) + str(rng.randint(0, 999)) for _ in range(n))


def _stored(tmp_path: Path, rows: list[dict], name: str = "data") -> Path:
    source = tmp_path / f"{name}.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return ingest(source, filename=source.name, output=tmp_path / f"{name}.parquet").parquet_path


def test_dedup_removes_planted_exact_and_near_duplicates_and_keeps_the_rest(tmp_path):
    rng = random.Random(1)
    unique = [{"text": _sentence(rng)} for _ in range(300)]
    rows = list(unique)
    # Exact copies (other case and spacing), and near copies (the last of thirty words changed:
    # 25 of 27 word 5-grams shared, a similarity of 0.93).
    rows += [{"text": "  " + unique[i]["text"].upper().replace(" ", "   ")} for i in range(0, 20)]
    near = []
    for i in range(20, 50):
        words = unique[i]["text"].split()
        words[-1] = "changed"
        near.append({"text": " ".join(words)})
    rows += near
    rng.shuffle(rows[300:])
    outcome = curation.dedup(
        _stored(tmp_path, rows), tmp_path / "out.parquet", schema=DatasetSchema.TEXT, threshold=0.8
    )
    assert (outcome.removed_exact, outcome.removed_near) == (20, 30)
    kept = pq.read_table(outcome.kept.parquet_path).column("text").to_pylist()
    assert kept == [row["text"] for row in unique]
    assert outcome.kept.row_count == 300 and outcome.rows_per_second > 0
    example = next(e for e in outcome.examples if e["kind"] == "near")
    assert example["kept_row"] <= 300 < example["removed_row"] and "changed" in example["removed"]
    assert example["kept"] == unique[example["kept_row"] - 1]["text"]


def test_dedup_of_distinct_rows_changes_nothing_and_keeps_the_content_hash(tmp_path):
    rng = random.Random(2)
    rows = [{"instruction": _sentence(rng, 10), "output": _sentence(rng, 10)} for _ in range(100)]
    stored = _stored(tmp_path, rows)
    outcome = curation.dedup(stored, tmp_path / "out.parquet", schema=DatasetSchema.INSTRUCTION)
    assert outcome.removed_exact == outcome.removed_near == 0
    original = ingest(tmp_path / "data.jsonl", filename="data.jsonl", output=tmp_path / "again.parquet")
    assert outcome.kept.sha256 == original.sha256


def test_a_seeded_split_is_repeatable_and_partitions_every_row(tmp_path):
    rows = [{"text": f"row {i}"} for i in range(1000)]
    stored = _stored(tmp_path, rows)
    fractions = {"train": 0.8, "validation": 0.1, "test": 0.1}

    def parts(seed: int, folder: str) -> dict[str, list[str]]:
        (tmp_path / folder).mkdir()
        outputs = {name: tmp_path / folder / f"{name}.parquet" for name in fractions}
        curation.split(stored, outputs, schema=DatasetSchema.TEXT, fractions=fractions, seed=seed)
        return {name: pq.read_table(path).column("text").to_pylist() for name, path in outputs.items()}

    first, again, other = parts(7, "a"), parts(7, "b"), parts(8, "c")
    assert first == again and first != other
    everything = first["train"] + first["validation"] + first["test"]
    assert sorted(everything) == sorted(row["text"] for row in rows)
    assert 700 < len(first["train"]) < 900 and 50 < len(first["test"]) < 150


def test_the_contamination_check_finds_planted_overlap(tmp_path):
    rng = random.Random(3)
    train = [{"instruction": _sentence(rng, 20), "output": _sentence(rng, 20)} for _ in range(500)]
    evals = [{"question": _sentence(rng, 15), "choices": ["a", "b"], "answer": 0} for _ in range(50)]
    # Three eval questions quote a train row word for word (inside other text).
    for eval_row, train_row in ((4, 10), (17, 250), (42, 499)):
        quoted = " ".join(train[train_row]["output"].split()[3:13])
        evals[eval_row]["question"] = f"{_sentence(rng, 5)} {quoted} {_sentence(rng, 5)}"
    found = curation.contamination(
        _stored(tmp_path, evals, "eval"),
        _stored(tmp_path, train, "train"),
        eval_schema=DatasetSchema.MULTIPLE_CHOICE,
        train_schema=DatasetSchema.INSTRUCTION,
    )
    assert found["contaminated_rows"] == 3 and found["eval_rows"] == 50 and found["train_rows"] == 500
    assert [(e["eval_row"], e["train_row"]) for e in found["examples"]] == [(5, 11), (18, 251), (43, 500)]


def test_the_pii_scan_counts_planted_emails_and_phone_numbers_with_examples(tmp_path):
    rows = [{"text": f"plain row {i}"} for i in range(100)]
    rows[3]["text"] = "write to jane.doe@example.com or john@example.org"
    rows[50]["text"] = "call +1 415-555-0134 today"
    rows[77]["text"] = "server at 10.0.0.12"
    found = curation.pii_scan(_stored(tmp_path, rows), schema=DatasetSchema.TEXT)
    kinds = found["kinds"]
    assert (kinds["email"]["rows"], kinds["email"]["matches"]) == (1, 2)
    assert kinds["email"]["examples"] == [{"row": 4, "at": 9, "match": "j***.***@*******.*om"}]
    assert kinds["phone"]["examples"] == [{"row": 51, "at": 5, "match": "+* ***-***-**34"}]
    assert kinds["ip_address"]["rows"] == 1 and kinds["credit_card"]["rows"] == 0


@pytest.mark.parametrize("threshold", [0.0, 1.5])
def test_dedup_refuses_a_threshold_that_is_not_a_similarity(tmp_path, threshold):
    with pytest.raises(ValueError):
        curation.dedup(
            _stored(tmp_path, [{"text": "x"}]),
            tmp_path / "o.parquet",
            schema=DatasetSchema.TEXT,
            threshold=threshold,
        )


@pytest.mark.parametrize(
    "schema, rows",
    [
        (DatasetSchema.TEXT, [{"text": "x < y"}, {"text": "x > y"}]),
        (DatasetSchema.TEXT, [{"text": "🙂🙂"}, {"text": "🎉"}, {"text": "!!!"}, {"text": "???"}]),
        (
            DatasetSchema.MULTIPLE_CHOICE,
            [
                {"question": "Which is larger?", "choices": ["one", "two"], "answer": 0},
                {"question": "Which is larger?", "choices": ["one", "two"], "answer": 1},
            ],
        ),
    ],
)
def test_dedup_keeps_rows_that_differ_only_in_symbols_or_answers(tmp_path, schema, rows):
    outcome = curation.dedup(_stored(tmp_path, rows), tmp_path / "out.parquet", schema=schema, threshold=0.8)
    assert (outcome.removed_exact, outcome.removed_near, outcome.kept.row_count) == (0, 0, len(rows))


def test_dedup_treats_rows_differing_only_in_case_and_spacing_as_exact_copies(tmp_path):
    rows = [{"text": "x < y"}, {"text": "  X   <\ty "}]
    outcome = curation.dedup(_stored(tmp_path, rows), tmp_path / "out.parquet", schema=DatasetSchema.TEXT)
    assert (outcome.removed_exact, outcome.removed_near, outcome.kept.row_count) == (1, 0, 1)


def test_the_pii_scan_result_never_holds_the_data_it_found(tmp_path):
    secrets = ["jane.doe@example.com", "4111 1111 1111 1234", "DE89 3704 0044 0532 0130 00"]
    rows = [{"text": f"mine is {secret}, keep it safe"} for secret in secrets]
    found = curation.pii_scan(_stored(tmp_path, rows), schema=DatasetSchema.TEXT)
    stored = json.dumps(found)
    assert not any(secret in stored for secret in secrets)
    assert found["kinds"]["credit_card"]["examples"][0] == {"row": 2, "at": 8, "match": "4*** **** **** **34"}
