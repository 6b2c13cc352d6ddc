"""The ingest library on its own: formats in, normalized Parquet out, every problem named."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from controlplane.datasets.ingest.pipeline import IngestOptions, ingest
from controlplane.datasets.ingest.problems import IngestRefused, RowsInvalid
from tests.rows import INSTRUCTION_ROWS, ROWS_BY_SCHEMA
from workers.spec import DatasetSchema


def _jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def _csv(rows: list[dict]) -> bytes:
    import csv

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
    return out.getvalue().encode()


def _parquet(rows: list[dict]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


def _hf_zip(rows: list[dict], tmp_path: Path) -> bytes:
    """A zipped Dataset.save_to_disk folder, written by the datasets library itself."""
    from datasets import Dataset

    folder = tmp_path / "saved"
    Dataset.from_list(rows).save_to_disk(str(folder))
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w") as archive:
        for file in folder.rglob("*"):
            archive.write(file, f"saved/{file.relative_to(folder)}")
    return sink.getvalue()


def _run(tmp_path: Path, filename: str, content: bytes, **options):
    path = tmp_path / "upload"
    path.write_bytes(content)
    return ingest(path, filename=filename, output=tmp_path / "out.parquet", options=IngestOptions(**options))


def _refused(tmp_path: Path, filename: str, content: bytes, **options) -> IngestRefused:
    with pytest.raises(IngestRefused) as caught:
        _run(tmp_path, filename, content, **options)
    return caught.value


FORMATS = {
    "data.jsonl": _jsonl,
    "data.json": lambda rows: json.dumps(rows).encode(),
    "data.csv": _csv,
    "data.parquet": _parquet,
    "data.jsonl.gz": lambda rows: gzip.compress(_jsonl(rows)),
    "data.jsonl.zst": lambda rows: _zstd(_jsonl(rows)),
}


def _zstd(content: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(content)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("schema", list(DatasetSchema))
@pytest.mark.parametrize("filename", [*FORMATS, "saved.zip"])
def test_every_format_and_schema_goes_in_and_comes_out_as_the_same_rows(tmp_path, schema, filename):
    rows = ROWS_BY_SCHEMA[schema]
    content = _hf_zip(rows, tmp_path) if filename == "saved.zip" else FORMATS[filename](rows)
    result = _run(tmp_path, filename, content)
    assert result.schema is schema and result.row_count == 2
    assert pq.read_table(result.parquet_path).to_pylist() == rows
    # The same rows from any format are the same content.
    reference = _run(tmp_path, "ref.jsonl", _jsonl(rows))
    assert result.sha256 == reference.sha256


def test_the_hash_ignores_key_order_spacing_blank_lines_and_a_byte_order_mark(tmp_path):
    plain = _run(tmp_path, "a.jsonl", _jsonl(INSTRUCTION_ROWS)).sha256
    reordered = b"".join(
        json.dumps(dict(reversed(r.items())), indent=None).encode() + b"\n\n" for r in INSTRUCTION_ROWS
    )
    assert _run(tmp_path, "b.jsonl", b"\xef\xbb\xbf" + reordered).sha256 == plain
    changed = INSTRUCTION_ROWS + [{"instruction": "new", "input": "", "output": "row"}]
    assert _run(tmp_path, "c.jsonl", _jsonl(changed)).sha256 != plain


def test_rows_cut_across_read_blocks_come_out_whole(tmp_path, monkeypatch):
    from controlplane.datasets.ingest import readers

    monkeypatch.setattr(readers, "BLOCK_BYTES", 50)  # every row and number straddles a block edge
    rows = [
        {"question": f"q{i} " * (i % 7 + 1), "choices": ["a", "b", "c"], "answer": i % 3} for i in range(300)
    ]
    for filename, content in (("a.json", json.dumps(rows).encode()), ("a.jsonl", _jsonl(rows))):
        result = _run(tmp_path, filename, content)
        assert pq.read_table(result.parquet_path).to_pylist() == rows


def test_a_json_array_broken_midway_is_refused_naming_the_row(tmp_path):
    content = b'[{"text": "a"}, {"text": "b"}, {"text": "c" "d"}, {"text": "e"}]'
    assert "row 3: is not valid JSON" in _refused(tmp_path, "a.json", content).message


def test_a_left_out_input_is_an_empty_input(tmp_path):
    result = _run(tmp_path, "a.jsonl", b'{"instruction": "Say hi", "output": "hi"}\n')
    assert pq.read_table(result.parquet_path).to_pylist() == [
        {"instruction": "Say hi", "input": "", "output": "hi"}
    ]


def test_a_column_mapping_names_the_fields_of_other_files(tmp_path):
    content = _csv([{"question_text": "Say hi", "reply": "hi"}])
    result = _run(tmp_path, "a.csv", content, mapping={"instruction": "question_text", "output": "reply"})
    assert result.schema is DatasetSchema.INSTRUCTION
    assert pq.read_table(result.parquet_path).column("output").to_pylist() == ["hi"]


def test_a_named_schema_overrides_detection(tmp_path):
    content = _jsonl([{"prompt": "a", "chosen": "b", "rejected": "c"}])
    problem = _refused(tmp_path, "a.jsonl", content, schema=DatasetSchema.TEXT)
    assert "line 1: 'prompt' is not a field of the text schema" in problem.message


def test_columns_of_no_known_schema_are_refused_with_the_columns_named(tmp_path):
    problem = _refused(tmp_path, "a.jsonl", b'{"foo": "x", "bar": "y"}\n')
    assert "could not be told from the columns ('bar', 'foo')" in problem.message


GOOD = _jsonl(INSTRUCTION_ROWS)


@pytest.mark.parametrize(
    "content, kind, example",
    [
        (GOOD + b"{not json\n", "syntax", "line 3: is not valid JSON"),
        (GOOD + b'{"instruction": "x"}\n', "missing", "line 3: 'output' is missing"),
        (GOOD + b'{"instruction": "   ", "output": "y"}\n', "empty", "line 3: 'instruction' is empty"),
        (GOOD + b'{"instruction": 5, "output": "y"}\n', "wrong_type",
         "line 3: 'instruction' must be text, not a number"),
        (GOOD + b'["a list"]\n', "not_an_object", "line 3: must be an object with the instruction fields"),
        (GOOD + b'{"instruction": "x", "output": "y", "extra": 1}\n', "unknown_field",
         "line 3: 'extra' is not a field"),
        (GOOD + b'{"instruction": "\xff\xfe", "output": "y"}\n', "encoding", "line 3: is not UTF-8 text"),
        (
            b'{"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]}\n',
            "unknown_role",
            "line 1: 'messages[1].role' is 'bot'; it must be one of system, user, assistant, tool",
        ),
        (
            b'{"question": "q", "choices": ["a", "b"], "answer": 2}\n',
            "bad_answer",
            "line 1: 'answer' 2 is not one of the 2 choices",
        ),
    ],
)  # fmt: skip
def test_every_kind_of_bad_row_is_named_with_its_line(tmp_path, content, kind, example):
    problem = _refused(tmp_path, "a.jsonl", content)
    assert isinstance(problem, RowsInvalid)
    assert problem.report["counts"] == {kind: 1}
    assert problem.report["examples"][kind][0].startswith(example)
    assert example in problem.message and "nothing was stored" in problem.message


def test_an_over_long_row_is_refused_against_the_chosen_tokenizer_limit(tmp_path):
    def words(texts):
        return [len(text.split()) for text in texts]

    content = GOOD + _jsonl([{"instruction": "one two three four five six", "output": "seven"}])
    problem = _refused(tmp_path, "a.jsonl", content, token_counter=words, max_tokens=5)
    assert problem.report["examples"]["too_long"] == ["line 3: is 7 tokens long; the limit is 5"]


def test_every_bad_row_is_counted_and_the_first_of_each_kind_listed(tmp_path):
    content = b"nope\n" * 30 + b'{"instruction": "x"}\n' * 3
    problem = _refused(tmp_path, "a.jsonl", content)
    assert problem.report["error_count"] == 33
    assert problem.report["counts"] == {"syntax": 30, "missing": 3}
    assert len(problem.report["examples"]["syntax"]) == 20 and len(problem.report["examples"]["missing"]) == 3
    assert "(and 32 more)" in problem.message


def test_bad_rows_deep_in_a_large_file_are_named_by_their_line(tmp_path):
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(200_000)]
    content = _jsonl(rows[:150_000]) + b'{"instruction": "x"}\n' + _jsonl(rows[150_000:])
    problem = _refused(tmp_path, "a.jsonl", content)
    assert problem.report["examples"] == {"missing": ["line 150001: 'output' is missing"]}


def test_a_large_file_is_written_in_row_groups_with_its_stats(tmp_path):
    rows = [{"instruction": f"question {i}", "output": "x" * (i % 100 + 1)} for i in range(300_000)]
    result = _run(tmp_path, "a.jsonl", _jsonl(rows), token_counter=lambda texts: [len(t) for t in texts])
    parquet = pq.ParquetFile(result.parquet_path)
    assert parquet.metadata.num_rows == 300_000 and parquet.num_row_groups >= 2
    stats = result.stats
    assert stats["row_count"] == 300_000
    assert stats["fill_rates"] == {"instruction": 1.0, "input": 0.0, "output": 1.0}
    lengths = [len(f"{row['instruction']}\n\n{row['output']}") for row in rows]
    assert (stats["bytes"]["min"], stats["bytes"]["max"]) == (min(lengths), max(lengths))
    assert stats["tokens"]["sampled_rows"] <= 20_000 and stats["tokens"]["p50"] > 0


def test_chat_stats_count_roles_and_turns(tmp_path):
    result = _run(tmp_path, "a.jsonl", _jsonl(ROWS_BY_SCHEMA[DatasetSchema.CHAT]))
    assert result.stats["roles"] == {"assistant": 2, "system": 1, "user": 2}
    assert (result.stats["turns"]["min"], result.stats["turns"]["max"]) == (2, 3)


def test_an_empty_file_is_refused(tmp_path):
    assert "no rows" in _refused(tmp_path, "a.jsonl", b"\n\n").message


def test_a_gzip_bomb_is_refused(tmp_path):
    # Blank lines: no line runs past the bound on a line, so only the expansion stops it.
    problem = _refused(tmp_path, "a.jsonl.gz", gzip.compress((b" " * 99 + b"\n") * 600_000))
    assert "compression bomb" in problem.message


def test_a_zip_bomb_is_refused_before_it_is_unpacked(tmp_path):
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("state.json", "{}")
        archive.writestr("data-00000-of-00001.arrow", b"\0" * 60_000_000)
    problem = _refused(tmp_path, "saved.zip", sink.getvalue())
    assert "compression bomb" in problem.message
    assert not (tmp_path / "unpacked" / "data-00000-of-00001.arrow").exists()


@pytest.mark.parametrize("member", ["../evil.txt", "/etc/evil.txt", "a/../../evil.txt"])
def test_an_archive_reaching_outside_itself_is_refused(tmp_path, member):
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w") as archive:
        archive.writestr(member, "x")
    problem = _refused(tmp_path, "saved.zip", sink.getvalue())
    assert "outside itself" in problem.message
    # The archive is unpacked under tmp_path, so an escape would land there or at its absolute path.
    assert list(tmp_path.rglob("evil.txt")) == [] and not Path("/etc/evil.txt").exists()


def test_a_tar_with_a_link_is_refused(tmp_path):
    sink = io.BytesIO()
    with tarfile.open(fileobj=sink, mode="w") as archive:
        link = tarfile.TarInfo("state.json")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    assert "link" in _refused(tmp_path, "saved.tar", sink.getvalue()).message


@pytest.mark.parametrize("name", ["..", "", "../..", "a/", "%2e%2e", "\u202e\r\n", "．．"])
def test_a_file_name_with_no_name_left_once_cleaned_is_refused(name):
    from controlplane.datasets.ingest.sources import filename_normalize

    with pytest.raises(IngestRefused, match="holds no name once its folders and invisible characters"):
        filename_normalize(name)


def test_a_file_named_parquet_that_is_not_is_refused(tmp_path):
    assert "is not" in _refused(tmp_path, "a.parquet", GOOD).message


def test_a_broken_gzip_file_is_refused(tmp_path):
    assert "could not" in _refused(tmp_path, "a.jsonl.gz", gzip.compress(GOOD)[:30]).message


def test_a_line_nested_ten_thousand_levels_deep_is_named_by_its_line_and_never_reaches_arrow(tmp_path):
    # About 20 KB; Arrow's JSON reader crashes the whole process on it.
    deep = b'{"instruction": "x", "output": ' + b"[" * 10_000 + b"]" * 10_000 + b"}\n"
    problem = _refused(tmp_path, "a.jsonl", GOOD + deep + GOOD)
    assert problem.report["examples"] == {"syntax": ["line 3: is nested more than 100 levels deep"]}


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path):
    rows = [{"instruction": "[" * 500 + '"{' * 200, "output": "]" * 500}, *INSTRUCTION_ROWS]
    assert _run(tmp_path, "a.jsonl", _jsonl(rows)).stats["row_count"] == 3


def test_a_json_array_nested_too_deeply_is_refused_naming_the_row(tmp_path):
    content = b"[" + json.dumps(INSTRUCTION_ROWS[0]).encode() + b"," + b"[" * 100_000 + b"]" * 100_000 + b"]"
    assert _refused(tmp_path, "a.json", content).message.startswith("row 2: is nested too deeply")


def test_a_csv_cell_holding_a_list_nested_too_deeply_is_a_bad_row(tmp_path):
    content = b'question,choices,answer\nq,"' + b"[" * 100_000 + b'",0\n'
    problem = _refused(tmp_path, "a.csv", content)
    assert problem.report["examples"] == {"syntax": ["row 1: holds a list nested too deeply to read"]}


@pytest.mark.parametrize("answer", ["\u00b2", "\u0663", "9" * 400, "\u00e9"])
def test_an_answer_that_only_looks_like_a_number_or_letter_is_a_wrong_type(tmp_path, answer):
    row = {"question": "q", "choices": ["a", "b"], "answer": answer}
    problem = _refused(tmp_path, "a.jsonl", _jsonl([row]))
    assert list(problem.report["counts"]) in (["wrong_type"], ["bad_answer"])


def test_a_column_name_holding_a_nul_byte_is_shown_escaped(tmp_path):
    problem = _refused(tmp_path, "a.jsonl", _jsonl([{"instruction": "x", "output": "y", "a\x00b": 1}]))
    assert "\x00" not in problem.message and "'a\\x00b' is not a field" in problem.message
    refused = _refused(tmp_path, "a.jsonl", _jsonl([{"a\x00b": 1}]))
    assert "\x00" not in refused.message and "'a\\x00b'" in refused.message


def _zip(members: dict[str, bytes]) -> bytes:
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return sink.getvalue()


def test_a_zip_whose_member_headers_are_broken_is_refused(tmp_path):
    content = _zip({"state.json": b"{}"}).replace(b"PK\x03\x04", b"XX\x03\x04", 1)
    assert "could not be read" in _refused(tmp_path, "saved.zip", content).message


def test_a_zip_holding_a_file_and_a_folder_of_the_same_name_is_refused(tmp_path):
    content = _zip({"x": b"1", "x/state.json": b"{}"})
    problem = _refused(tmp_path, "saved.zip", content)
    assert "a file and a folder of the same name" in problem.message and str(tmp_path) not in problem.message


def test_a_truncated_tgz_is_refused(tmp_path):
    sink = io.BytesIO()
    with tarfile.open(fileobj=sink, mode="w:gz") as archive:
        data = bytes(range(256)) * 4000
        info = tarfile.TarInfo("saved/data.arrow")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    content = sink.getvalue()
    assert "could not be read" in _refused(tmp_path, "saved.tgz", content[: len(content) // 2]).message


def test_a_saved_dataset_naming_a_data_file_that_is_not_text_is_refused(tmp_path):
    content = _zip({"state.json": json.dumps({"_data_files": [{"filename": 5}]}).encode()})
    assert "names a data file 5" in _refused(tmp_path, "saved.zip", content).message


def test_a_long_multibyte_file_name_is_shortened_by_bytes_keeping_its_extensions():
    from controlplane.datasets.ingest.sources import MAX_FILENAME_BYTES, filename_normalize

    name = filename_normalize("数据" * 100 + ".jsonl.gz")
    assert name.startswith("数据") and name.endswith(".jsonl.gz") and len(name.encode()) <= MAX_FILENAME_BYTES


# The content hash is the address of a stored version: a change to how rows are read must not
# move it, or the same upload would stop matching the version already stored.
PINNED_ROWS = {
    DatasetSchema.TEXT: [{"text": "The sky is blue."}, {"text": 'Héllo wörld ✓ "quoted" \\ back'}],
    DatasetSchema.INSTRUCTION: [
        *INSTRUCTION_ROWS,
        {"instruction": "Left out", "output": "ok"},
        {"instruction": "Null", "input": None, "output": "ok"},
    ],
    DatasetSchema.CHAT: ROWS_BY_SCHEMA[DatasetSchema.CHAT],
    DatasetSchema.PREFERENCE: ROWS_BY_SCHEMA[DatasetSchema.PREFERENCE],
    DatasetSchema.MULTIPLE_CHOICE: ROWS_BY_SCHEMA[DatasetSchema.MULTIPLE_CHOICE],
}
PINNED_HASHES = {
    DatasetSchema.TEXT: "be2b0e221025d8e18b3da6510a8d89f32f157de8c11b16555c313fe7ae8378b1",
    DatasetSchema.INSTRUCTION: "c296d9fc6f0591353ad75774892fa29fa139f8ab0bb0e20d2a860365d241fd47",
    DatasetSchema.CHAT: "d36cad2d1cd2284b946d52b2b3ff03be479a18a54d3982e9c4924fb4b1629cb3",
    DatasetSchema.PREFERENCE: "7e03ce2a1e602a986dbd26957e3aef973c396349b4157965b584ea4fc31b4d7a",
    DatasetSchema.MULTIPLE_CHOICE: "e0f34c0d3bb0591fbf145d62af6c35561c4a967c7de133bc00faf4a5a8ad9d9a",
}


@pytest.mark.parametrize("schema", list(DatasetSchema))
def test_the_content_hash_of_a_fixed_file_stays_the_same(tmp_path, schema):
    content = b"".join(json.dumps(row, ensure_ascii=False).encode() + b"\n" for row in PINNED_ROWS[schema])
    assert _run(tmp_path, "a.jsonl", content).sha256 == PINNED_HASHES[schema]


def test_the_content_hash_of_a_file_of_many_read_blocks_stays_the_same(tmp_path):
    rows = [
        {
            "instruction": f"question {i} " + "why " * (i % 13),
            "input": "" if i % 3 else f"context {i}",
            "output": "é" * (i % 5) + "x" * (i % 97 + 1),
        }
        for i in range(150_000)
    ]
    # About 22 MB, half of it with non-ASCII text escaped: it spans several read blocks.
    body = b"".join(json.dumps(row, ensure_ascii=i % 2 == 0).encode() + b"\n" for i, row in enumerate(rows))
    pinned = "83c1e8728f1b01bf935fc8d859466c8f77d3ef96fb51f8313d7c5f513e6108ef"
    assert _run(tmp_path, "a.jsonl", body).sha256 == pinned
    # A blank line midway sends its block down the row-by-row path: the same rows, the same hash.
    half = body.index(b"\n", len(body) // 2) + 1
    assert _run(tmp_path, "b.jsonl", b"\xef\xbb\xbf" + body[:half] + b"\n  \n" + body[half:]).sha256 == pinned


# Arrow's JSON reader and Python's json differ on these lines; each must come out as json reads it.
EXTRA = "is not valid JSON (Extra data)"


@pytest.mark.parametrize(
    "content, counts, example",
    [
        # Two objects on one line, and a blank line that would even out Arrow's row count.
        (GOOD + b'{"instruction": "a", "output": "b"} {"instruction": "c", "output": "d"}\n\n',
         {"syntax": 1}, f"line 3: {EXTRA}"),
        # The same with an object spread over two lines instead of the blank line.
        (b'{"instruction": "a", "output": "b"}{"instruction": "c", "output": "d"}\n'
         b'{"instruction": "e",\n"output": "f"}\n', {"syntax": 3}, f"line 1: {EXTRA}"),
        (GOOD + b'{"instruction": "a", "output": "b"} x\n', {"syntax": 1}, f"line 3: {EXTRA}"),
        (GOOD + b'{"instruction": "a", "output": "b"},\n', {"syntax": 1}, f"line 3: {EXTRA}"),
        (GOOD + b"null\n", {"not_an_object": 1}, "line 3: must be an object with the instruction fields"),
        (GOOD + b'{"instruction": "a", "output": "b", "extra": null}\n', {"unknown_field": 1},
         "line 3: 'extra' is not a field of the instruction schema"),
        # A duplicate key: json keeps the last value.
        (GOOD + b'{"instruction": "a", "instruction": 5, "output": "b"}\n', {"wrong_type": 1},
         "line 3: 'instruction' must be text, not a number"),
        (GOOD + b'{"instruction": "\\ud800", "output": "b"}\n', {"encoding": 1},
         "line 3: 'instruction' holds half of a surrogate pair"),
        (GOOD + b'{"instr\xffuction": "a", "output": "b"}\n', {"encoding": 1}, "line 3: is not UTF-8 text"),
        (GOOD + b'{"instruction": 1.5, "output": "b"}\n', {"wrong_type": 1},
         "line 3: 'instruction' must be text, not a number"),
        (GOOD + b'{"instruction": ["a"], "output": "b"}\n', {"wrong_type": 1},
         "line 3: 'instruction' must be text, not a list"),
        (b'{"question": "q", "choices": ["a", 2], "answer": 0}\n', {"wrong_type": 1},
         "line 1: 'choices[1]' must be text, not a number"),
    ],
)  # fmt: skip
def test_lines_arrow_reads_otherwise_are_refused_as_json_reads_them(tmp_path, content, counts, example):
    problem = _refused(tmp_path, "a.jsonl", content)
    assert problem.report["counts"] == counts
    assert problem.report["examples"][next(iter(counts))][0].startswith(example)


def test_a_duplicate_key_keeps_its_last_value_as_json_does(tmp_path):
    content = GOOD + b'{"instruction": 5, "instruction": "a", "output": "b"}\n'
    rows = pq.read_table(_run(tmp_path, "a.jsonl", content).parquet_path).to_pylist()
    assert rows[-1] == {"instruction": "a", "input": "", "output": "b"}


def test_text_that_looks_like_a_date_stays_text(tmp_path):
    # Arrow's reader guesses a timestamp type for a column of such strings.
    result = _run(tmp_path, "a.jsonl", b'{"text": "2020-01-01"}\n{"text": "2021-02-03 10:00:00"}\n')
    assert pq.read_table(result.parquet_path).to_pylist() == [
        {"text": "2020-01-01"},
        {"text": "2021-02-03 10:00:00"},
    ]
    row = {"question": "When?", "choices": ["2020-01-01", "2021-01-01"], "answer": 1}
    assert pq.read_table(_run(tmp_path, "b.jsonl", _jsonl([row])).parquet_path).to_pylist() == [row]
    chat = {
        "messages": [{"role": "user", "content": "Today?"}, {"role": "assistant", "content": "2024-05-06"}]
    }
    assert pq.read_table(_run(tmp_path, "c.jsonl", _jsonl([chat])).parquet_path).to_pylist() == [chat]


def test_a_mapping_reading_two_fields_from_one_column_reads_it_for_both(tmp_path):
    content = _jsonl([{"question": "same", "answer": "a"}] * 3)
    mapping = {"instruction": "question", "input": "question", "output": "answer"}
    result = _run(tmp_path, "a.jsonl", content, schema=DatasetSchema.INSTRUCTION, mapping=mapping)
    assert pq.read_table(result.parquet_path).to_pylist()[0] == {
        "instruction": "same",
        "input": "same",
        "output": "a",
    }


def test_bad_values_in_later_blocks_are_named_by_their_line(tmp_path, monkeypatch):
    from controlplane.datasets.ingest import readers

    # Blocks of a few lines: the first tells the layout, the later ones are read with it.
    monkeypatch.setattr(readers, "BLOCK_BYTES", 200)
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(60)]
    lines = [json.dumps(row).encode() for row in rows]
    lines[30] = b'{"instruction": 7, "output": "x"}'
    lines[45] = b'{"instruction": "2020-01-01", "output": "x"} {"instruction": "y", "output": "z"}'
    lines[50] = b'{"instruction": "x", "output": {"a": 1}}'
    problem = _refused(tmp_path, "a.jsonl", b"\n".join(lines) + b"\n")
    assert problem.report["examples"] == {
        "wrong_type": [
            "line 31: 'instruction' must be text, not a number",
            "line 51: 'output' must be text, not an object",
        ],
        "syntax": ["line 46: is not valid JSON (Extra data)"],
    }
    lines[30], lines[45], lines[50] = b'{"instruction": "2020-01-01", "output": "x"}', lines[44], lines[49]
    assert _run(tmp_path, "b.jsonl", b"\n".join(lines) + b"\n").row_count == 60


def test_windows_line_ends_and_spaces_around_a_row_do_not_change_the_hash(tmp_path):
    plain = _run(tmp_path, "a.jsonl", _jsonl(INSTRUCTION_ROWS)).sha256
    crlf = b"".join(json.dumps(row).encode() + b"\r\n" for row in INSTRUCTION_ROWS)
    assert _run(tmp_path, "b.jsonl", crlf).sha256 == plain
    padded = b"".join(b"  " + json.dumps(row).encode() + b" \t\n" for row in INSTRUCTION_ROWS)
    assert _run(tmp_path, "c.jsonl", padded).sha256 == plain


def test_only_the_line_nested_past_the_limit_is_named_among_rows_of_many_brackets(tmp_path):
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}] * 40}
    at_limit = b'{"messages": ' + b"[" * 99 + b"]" * 99 + b"}"  # 100 levels with the object
    past_limit = b'{"messages": ' + b"[" * 100 + b"]" * 100 + b"}"
    lines = [json.dumps(chat).encode()] * 50 + [at_limit] + [json.dumps(chat).encode()] * 50 + [past_limit]
    problem = _refused(tmp_path, "a.jsonl", b"\n".join(lines) + b"\n")
    assert problem.report["examples"]["syntax"] == ["line 102: is nested more than 100 levels deep"]
    assert problem.report["counts"] == {"syntax": 1, "wrong_type": 1}


def _outcome(tmp_path: Path, content: bytes) -> tuple:
    try:
        result = _run(tmp_path, "a.jsonl", content)
    except IngestRefused as refused:
        return ("refused", refused.message, refused.report)
    return ("stored", result.sha256, pq.read_table(result.parquet_path).to_pylist(), result.stats)


ODD_LINES = [
    b'{"instruction": "a", "output": "b"} {"instruction": "c", "output": "d"}',
    b'{"instruction": "a",',
    b'"output": "b"}',
    b"",
    b"   ",
    b"null",
    b"{}",
    b'{"instruction": "2020-01-01", "output": "b"}',
    b'{"instruction": 5, "output": "b"}',
    b'{"instruction": "a", "instruction": "b", "output": "c"}',
    b'{"instruction": "\\ud800", "output": "b"}',
    b'{"instruction": "\xc3", "output": "b"}',
    b'  {"instruction": "padded", "output": "b"}  ',
    b'{"instruction": "a", "output": "b", "input": null}',
    b'{"instruction": "a", "output": "b"}\r',
    b'{"instruction": "a", "output": ' + b"[" * 150 + b"]" * 150 + b"}",
]


def test_the_fast_path_agrees_with_reading_every_line_with_json(tmp_path, monkeypatch):
    """Every pair of lines Arrow reads otherwise, among good rows: the same outcome as json alone."""
    from itertools import combinations_with_replacement

    from controlplane.datasets.ingest import readers

    good = [json.dumps({"instruction": f"q{i}", "output": f"a{i}"}).encode() for i in range(6)]
    contents = [
        b"\n".join([*good[:2], first, *good[2:4], second, *good[4:]]) + b"\n"
        for first, second in combinations_with_replacement(ODD_LINES, 2)
    ]
    fast = [_outcome(tmp_path, content) for content in contents]
    # Arrow never vouching for a block: every line is read by json.
    monkeypatch.setattr(readers, "_jsonl_parse", lambda block, hints: None)
    for content, outcome in zip(contents, fast, strict=True):
        assert _outcome(tmp_path, content) == outcome, content
