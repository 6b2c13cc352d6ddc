"""The worker reads what the control plane's ingest writes: normalized Parquet, a batch at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from controlplane.datasets.ingest.pipeline import ingest
from tests.rows import ROWS_BY_SCHEMA
from workers.engine.data import (
    ChatMessage,
    ChatRow,
    DatasetError,
    InstructionRow,
    PreferenceRow,
    TextRow,
    dataset_files,
    format_example,
    read_training_rows,
)
from workers.spec import DatasetSchema


def _normalized(tmp_path: Path, rows: list[dict]) -> Path:
    source = tmp_path / "upload.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return ingest(source, filename="upload.jsonl", output=tmp_path / "data.parquet").parquet_path


def test_instruction_rows_come_back_from_the_normalized_parquet(tmp_path):
    rows = read_training_rows(
        [_normalized(tmp_path, ROWS_BY_SCHEMA["instruction"])], DatasetSchema.INSTRUCTION
    )
    assert rows == [
        InstructionRow(instruction="Say hi", input="", output="hi"),
        InstructionRow(instruction="Add", input="1 2", output="3"),
    ]


@pytest.mark.parametrize(
    "schema, row_type, first_text",
    [
        ("text", TextRow, "The sky is blue."),
        ("chat", ChatRow, "### System:\nBe brief.\n\n### User:\nHi\n\n### Assistant:\nHello."),
        ("preference", PreferenceRow, "Greet me\n\nHello!"),
        ("multiple_choice", TextRow, "2+2?\nA. 3\nB. 4\nC. 5\nAnswer: B"),
    ],
)
def test_the_other_schemas_keep_their_shape_and_read_as_one_text(tmp_path, schema, row_type, first_text):
    rows = read_training_rows([_normalized(tmp_path, ROWS_BY_SCHEMA[schema])], DatasetSchema(schema))
    assert len(rows) == 2 and all(isinstance(row, row_type) for row in rows)
    assert format_example(rows[0]) == first_text


def test_chat_and_preference_rows_keep_their_parts(tmp_path):
    chat = read_training_rows([_normalized(tmp_path, ROWS_BY_SCHEMA["chat"])], DatasetSchema.CHAT)[1]
    assert chat == ChatRow((ChatMessage("user", "2+2?"), ChatMessage("assistant", "4")))
    (tmp_path / "pref").mkdir()
    preference = [_normalized(tmp_path / "pref", ROWS_BY_SCHEMA["preference"])]
    pair = read_training_rows(preference, DatasetSchema.PREFERENCE)[0]
    assert pair == PreferenceRow(prompt="Greet me", chosen="Hello!", rejected="No.")


def test_a_large_parquet_file_is_read_in_batches_in_order(tmp_path):
    path = tmp_path / "big.parquet"
    n = 10_000
    pq.write_table(
        pa.table({"instruction": [f"q{i}" for i in range(n)], "input": [""] * n, "output": ["a"] * n}),
        path,
        row_group_size=1000,
    )
    rows = read_training_rows(dataset_files(tmp_path), DatasetSchema.INSTRUCTION)
    assert len(rows) == n and rows[-1].instruction == f"q{n - 1}"


def test_a_parquet_file_without_its_schemas_columns_or_with_a_bad_row_fails_the_job_with_a_sentence(tmp_path):
    odd = tmp_path / "odd.parquet"
    pq.write_table(pa.table({"foo": ["x"]}), odd)
    with pytest.raises(
        DatasetError, match="is not instruction data: it has the columns foo, not instruction, output"
    ):
        read_training_rows([odd], DatasetSchema.INSTRUCTION)
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"instruction": ["ok", " "], "output": ["y", "z"]}), bad)
    with pytest.raises(DatasetError, match="dataset row 2 has a bad 'instruction': must not be blank"):
        read_training_rows([bad], DatasetSchema.INSTRUCTION)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(DatasetError, match="is not readable Parquet"):
        read_training_rows([broken], DatasetSchema.INSTRUCTION)


def test_reading_parquet_needs_no_django(tmp_path):
    path = _normalized(tmp_path, ROWS_BY_SCHEMA["chat"])
    code = (
        "import sys\nsys.modules['django'] = None\n"
        "from pathlib import Path\nfrom workers.engine.data import read_training_rows\n"
        f"print(len(read_training_rows([Path({str(path)!r})], 'chat')))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "2"


def test_a_question_with_more_than_26_choices_labels_them_on_past_z(tmp_path):
    row = {"question": "Pick", "choices": [f"c{i}" for i in range(30)], "answer": 27}
    rows = read_training_rows([_normalized(tmp_path, [row])], DatasetSchema.MULTIPLE_CHOICE)
    text = format_example(rows[0])
    assert "\nZ. c25\nAA. c26\nAB. c27\nAC. c28\nAD. c29\nAnswer: AB" in text


def test_the_engine_reads_the_schema_the_spec_names_and_guesses_none(tmp_path):
    # A multiple-choice version also has no "text" column; a text version is not read as instructions.
    choice = _normalized(tmp_path, ROWS_BY_SCHEMA["multiple_choice"])
    with pytest.raises(DatasetError, match="is not text data"):
        read_training_rows([choice], DatasetSchema.TEXT)
    (tmp_path / "text").mkdir()
    text = _normalized(tmp_path / "text", ROWS_BY_SCHEMA["text"])
    with pytest.raises(DatasetError, match="is not instruction data"):
        read_training_rows([text], DatasetSchema.INSTRUCTION)
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text(json.dumps(ROWS_BY_SCHEMA["instruction"][0]) + "\n")
    with pytest.raises(DatasetError, match="holds instruction rows, not chat"):
        read_training_rows([jsonl], DatasetSchema.CHAT)
