"""What the ingest refuses rather than store silently wrong: rows and values past their bounds, a file
that goes on after its end, a column named twice, a preference for nothing, a name that lies about
the content, NUL characters and numbers too long to read."""

from __future__ import annotations

import gzip
import io
import json
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from controlplane.datasets.ingest.pipeline import IngestOptions, ingest
from controlplane.datasets.ingest.problems import IngestRefused
from controlplane.datasets.ingest.sources import Limits
from tests.rows import INSTRUCTION_ROWS, ROWS_BY_SCHEMA
from workers.spec import DatasetSchema

MIB = 1024 * 1024


def _jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


GOOD = _jsonl(INSTRUCTION_ROWS)


def _run(tmp_path, filename: str, content: bytes, **options):
    path = tmp_path / "upload"
    path.write_bytes(content)
    return ingest(path, filename=filename, output=tmp_path / "out.parquet", options=IngestOptions(**options))


def _refused(tmp_path, filename: str, content: bytes, **options) -> IngestRefused:
    with pytest.raises(IngestRefused) as caught:
        _run(tmp_path, filename, content, **options)
    return caught.value


# --- a row and a value are bounded ---------------------------------------------------------


def test_a_line_over_the_bound_is_named_among_good_lines_and_the_rest_still_read(tmp_path):
    long_line = json.dumps({"instruction": "x", "output": "y" * (2 * MIB)}).encode() + b"\n"
    problem = _refused(tmp_path, "a.jsonl", GOOD + long_line + GOOD + b'{"instruction": "x"}\n')
    assert problem.report["counts"] == {"too_large": 1, "missing": 1}
    assert problem.report["examples"]["too_large"] == [
        f"line 3: is {len(long_line) - 1:,} bytes long; the most a line may hold is 1,048,576"
    ]


def test_a_line_running_past_a_read_block_is_refused_without_being_read_on(tmp_path, monkeypatch):
    from controlplane.datasets.ingest import readers

    monkeypatch.setattr(readers, "BLOCK_BYTES", 64 * 1024)
    endless = b'{"instruction": "x", "output": "' + b"y" * (3 * MIB)
    problem = _refused(tmp_path, "a.jsonl", GOOD + endless, limits=Limits(max_line_bytes=MIB))
    assert problem.report["examples"]["too_large"] == [
        "line 3: is longer than 1,048,576 bytes, the most a line may hold; the file was read no further"
    ]
    assert "nothing was stored" in problem.message


@pytest.mark.parametrize(
    "filename, content, example",
    [
        (
            "a.csv",
            b"instruction,output\nq,a\nq2,a2\nq3," + b"y" * 2_000_000 + b"\n",
            "row 3: the field 'output' is 2,000,000 bytes; the most is 262,144",
        ),
        (
            "a.jsonl",
            GOOD + _jsonl([{"instruction": "x", "output": "é" * 150_000}]),
            "line 3: the field 'output' is 300,000 bytes; the most is 262,144",
        ),
        (
            "a.jsonl",
            _jsonl([{"messages": [{"role": "user", "content": "z" * 300_000}]}]),
            "line 1: the field 'messages[0].content' is 300,000 bytes; the most is 262,144",
        ),
        (
            "a.jsonl",
            _jsonl([{"question": "q", "choices": ["a", "z" * 300_000], "answer": 0}]),
            "line 1: the field 'choices[1]' is 300,000 bytes; the most is 262,144",
        ),
    ],
)
def test_a_value_over_the_bound_is_refused_naming_its_row_and_field(tmp_path, filename, content, example):
    problem = _refused(tmp_path, filename, content, limits=Limits(max_line_bytes=4 * MIB))
    assert problem.report["examples"] == {"too_large": [example]}


def test_a_value_over_the_bound_in_parquet_is_refused(tmp_path):
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([{"text": "a"}, {"text": "b" * 300_000}]), sink)
    problem = _refused(tmp_path, "a.parquet", sink.getvalue())
    assert problem.report["examples"] == {
        "too_large": ["row 2: the field 'text' is 300,000 bytes; the most is 262,144"]
    }


def test_a_csv_record_over_the_bound_is_refused_naming_the_line_it_starts_on(tmp_path):
    # Quoted newlines and doubled quotes inside a field do not end its record.
    content = b'text\n"one\nrow, ""quoted"""\nplain\n"' + b"z\n" * (MIB // 2 + 1) + b'"\n'
    problem = _refused(tmp_path, "a.csv", content)
    assert problem.report["examples"]["too_large"] == [
        "the row starting on line 5: is longer than 1,048,576 bytes, the most a row may hold; "
        "the file was read no further"
    ]
    fits = _run(tmp_path, "b.csv", b'text\n"one\nrow, ""quoted"""\nplain\n')
    assert pq.read_table(fits.parquet_path).column("text").to_pylist() == ['one\nrow, "quoted"', "plain"]


@pytest.mark.parametrize("read_size", [1, 7, 64, 4096])
def test_a_csv_record_is_measured_across_reads_with_quotes_and_line_ends_inside_it(read_size):
    from controlplane.datasets.ingest.readers import _CsvRecordBound, _RecordTooLong

    # Each record spans 3 lines: an LF and a CR LF inside its quotes, and its own CR LF.
    records = "".join(f'"row {i}\nwith ""quotes"", and\r\nline ends"\r\n' for i in range(50)).encode()
    content = b"text\r\n" + records + b'"' + b"x\n" * 60 + b'"\r\nlast\r\n'

    def read_through(most: int) -> None:
        bound = _CsvRecordBound(io.BytesIO(content), most)
        buffer = bytearray(read_size)
        while bound.readinto(buffer):
            pass

    read_through(200)  # the longest record is 124 bytes
    with pytest.raises(_RecordTooLong) as caught:
        read_through(100)
    assert caught.value.line == 2 + 3 * 50


def test_a_json_array_element_over_the_bound_is_refused(tmp_path):
    whole = json.dumps([{"text": "a"}, {"text": "b" * (2 * MIB)}, {"text": "c"}]).encode()
    problem = _refused(tmp_path, "a.json", whole, limits=Limits(max_field_bytes=4 * MIB))
    assert problem.report["examples"]["too_large"][0].startswith("row 2: is 2,097,")
    assert problem.report["examples"]["too_large"][0].endswith(
        "bytes long; the most a row may hold is 1,048,576"
    )
    endless = b'[{"text": "a"}, {"text": "' + b"b" * (20 * MIB)
    problem = _refused(tmp_path, "b.json", endless)
    assert problem.report["examples"]["too_large"] == [
        "row 2: is longer than 1,048,576 bytes, the most a row may hold; the file was read no further"
    ]


# --- a JSON array is read whole, or refused ----------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (
            b'[{"text": "a"}] {"text": "dropped"}',
            'goes on after its array of 1 row(s) ends (\'{"text": "dropped"}\')',
        ),
        (b'[{"text": "a"}]\n[{"text": "b"}]\n', "goes on after its array of 1 row(s) ends"),
        (b'[{"text": "a"} {"text": "b"}]', "row 2: a comma is missing before it"),
        (b'[{"text": "a"},, {"text": "b"}]', "row 2: is missing: the array has a ',' where a row belongs"),
        (b'[, {"text": "a"}]', "row 1: is missing: the array has a ','"),
        (b'[{"text": "a"},]', "ends in a comma after row 1"),
        (b'[{"text": "a"}, {"text": "b"}', "ends after row 2 without its closing ']'"),
    ],
)
def test_a_json_array_that_is_not_one_whole_array_is_refused(tmp_path, content, message):
    assert message in _refused(tmp_path, "a.json", content).message


def test_spaces_after_a_json_array_are_fine(tmp_path):
    assert _run(tmp_path, "a.json", b' [{"text": "a"} , {"text": "b"} ]\r\n\t \n').row_count == 2


# --- CSV headers, preferences, NUL characters, long numbers -------------------------------------


def test_a_csv_header_naming_a_column_twice_is_refused(tmp_path):
    problem = _refused(tmp_path, "a.csv", b"instruction,output,output\nq,first,second\n")
    assert (
        problem.message
        == "The CSV header names the column 'output' 2 times; give each column a name of its own."
    )


@pytest.mark.parametrize("filename", ["a.jsonl", "a.csv"])
def test_preference_rows_whose_chosen_is_their_rejected_are_refused_by_row(tmp_path, filename):
    rows = [
        {"prompt": "p1", "chosen": "good", "rejected": "bad"},
        {"prompt": "p2", "chosen": "same", "rejected": "same"},
        {"prompt": "p3", "chosen": "x", "rejected": "x"},
    ]
    content = (
        _jsonl(rows)
        if filename == "a.jsonl"
        else b"prompt,chosen,rejected\np1,good,bad\np2,same,same\np3,x,x\n"
    )
    problem = _refused(tmp_path, filename, content)
    label = "line" if filename == "a.jsonl" else "row"
    reason = "'chosen' and 'rejected' are the same text; a preference needs two different answers"
    assert problem.report["examples"] == {"no_preference": [f"{label} 2: {reason}", f"{label} 3: {reason}"]}


@pytest.mark.parametrize(
    "filename, content, example",
    [
        (
            "a.jsonl",
            GOOD + b'{"instruction": "a\\u0000b", "output": "y"}\n',
            "line 3: 'instruction' holds a NUL",
        ),
        ("a.jsonl", b'{"text": "\\u0000"}\n', "line 1: 'text' holds a NUL"),
        ("a.csv", b"instruction,output\nq,a\x00b\n", "row 1: 'output' holds a NUL"),
        (
            "a.jsonl",
            b'{"messages": [{"role": "user", "content": "hi\\u0000"}]}\n',
            "line 1: 'messages[0].content' holds a NUL",
        ),
        (
            "a.jsonl",
            b'{"question": "q", "choices": ["a", "\\u0000"], "answer": 0}\n',
            "line 1: 'choices[1]' holds a NUL",
        ),
        ("a.json", b'[{"text": "x\\u0000"}]', "row 1: 'text' holds a NUL"),
    ],
)
def test_a_nul_character_in_a_value_is_refused_by_row(tmp_path, filename, content, example):
    problem = _refused(tmp_path, filename, content)
    assert problem.report["counts"] == {"nul_character": 1}
    assert problem.report["examples"]["nul_character"][0].startswith(example)


@pytest.mark.parametrize("filename", ["a.jsonl", "a.json"])
def test_a_number_of_thousands_of_digits_is_a_bad_row_not_a_crash(tmp_path, filename):
    row = b'{"question": "q", "choices": ["a", "b"], "answer": ' + b"1" * 5001 + b"}"
    content = row + b"\n" if filename == "a.jsonl" else b"[" + row + b"]"
    problem = _refused(tmp_path, filename, content)
    label = "line" if filename == "a.jsonl" else "row"
    assert problem.report["examples"] == {
        "bad_answer": [f"{label} 1: 'answer' is a number of 5,001 digits, not one of the 2 choices"]
    }
    as_text = _refused(
        tmp_path, filename, content.replace(b'"question": "q"', b'"question": -' + b"9" * 5000)
    )
    assert as_text.report["examples"]["wrong_type"] == [f"{label} 1: 'question' must be text, not a number"]


# --- a name must tell what the content is --------------------------------------------------------


def _zip() -> bytes:
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w") as archive:
        archive.writestr("state.json", "{}")
    return sink.getvalue()


def _parquet() -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(ROWS_BY_SCHEMA[DatasetSchema.TEXT]), sink)
    return sink.getvalue()


@pytest.mark.parametrize(
    "filename, content, message",
    [
        (
            "data.jsonl.gz",
            GOOD,
            "'data.jsonl.gz' is named as gzip-compressed but its content is not compressed",
        ),
        ("data.csv.zst", b"text\nhi\n", "is named as zstd-compressed but its content is not compressed"),
        (
            "data.jsonl",
            gzip.compress(GOOD),
            "'data.jsonl' is named as not compressed but its content is gzip-compressed",
        ),
        (
            "data.jsonl.zst",
            gzip.compress(GOOD),
            "is named as zstd-compressed but its content is gzip-compressed",
        ),
        ("data.jsonl", _parquet(), "'data.jsonl' is named as jsonl but holds Parquet"),
        ("data.csv", _zip(), "'data.csv' is named as csv but holds a zip archive"),
    ],
)
def test_a_name_that_tells_another_format_than_the_content_is_refused(tmp_path, filename, content, message):
    assert message in _refused(tmp_path, filename, content).message


def test_a_file_whose_name_tells_no_format_is_read_by_its_content(tmp_path):
    assert _run(tmp_path, "data", gzip.compress(GOOD)).row_count == 2
    assert _run(tmp_path, "rows.txt", GOOD).row_count == 2


# --- a name is kept cleaned ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "sent, kept",
    [
        ("data\r\nX-Injected: 1\r\n.jsonl", "dataX-Injected: 1.jsonl"),
        ("invoice\u202egpj.jsonl", "invoicegpj.jsonl"),
        ("a\u200b\u2066b\u2069\u00ad.jsonl", "ab.jsonl"),
        ("%2e%2e%2f%2e%2e%2fetc%2fpasswd.jsonl", "passwd.jsonl"),
        ("%252e%252e%252fsecret.jsonl", "secret.jsonl"),
        ("\uff0e\uff0e\uff0f\uff0e\uff0e\uff0fsecret.jsonl", "secret.jsonl"),
        ("data\uff0ejsonl", "data.jsonl"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\data.csv", "data.csv"),
        (" data.jsonl. ", "data.jsonl"),
    ],
)
def test_a_file_name_is_kept_as_what_it_spells_without_paths_or_invisible_characters(sent, kept):
    from controlplane.datasets.ingest.sources import filename_normalize

    assert filename_normalize(sent) == kept
