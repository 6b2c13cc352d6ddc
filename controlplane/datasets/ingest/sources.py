"""Where a dataset's bytes come from: decompression, archives and the format of the file.

Every byte that leaves a decompressor is counted against the compressed
bytes read so far, so a small file that expands without bound (a gzip or zip
bomb) is stopped a few megabytes in with a clear error, instead of filling
the disk or the memory. A file's name and its content must tell the same
format: a name is what a person sees, and the content is what is read.
"""

from __future__ import annotations

import io
import json
import tarfile
import unicodedata
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING
from urllib.parse import unquote

import pyarrow as pa

from controlplane.datasets.ingest.problems import IngestRefused, clipped

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZIP_MAGIC = b"PK\x03\x04"
PARQUET_MAGIC = b"PAR1"


class FileFormat(StrEnum):
    JSONL = "jsonl"
    JSON = "json"
    CSV = "csv"
    PARQUET = "parquet"
    HF_DATASET = "hf_dataset"


class Compression(StrEnum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


@dataclass(frozen=True)
class Limits:
    """How far a file may expand, and how large one row and one value may be.

    A text file compresses 3-10x; 100x is a bomb, not data. The row and value
    bounds keep what a reader holds at once small whatever the file holds: a
    row is read whole before it is checked, so without them one endless line
    would be held in memory whole.
    """

    max_expanded_bytes: int = 64 * 1024**3
    max_expansion_ratio: float = 100.0
    # The ratio is judged only past this many bytes: tiny files compress oddly.
    ratio_grace_bytes: int = 8 * 1024**2
    max_archive_members: int = 10_000
    # One row as the file holds it: a JSONL line, an element of a JSON array, a CSV record.
    max_line_bytes: int = 1024**2
    # One text value of a row: a field, a message's content, a choice.
    max_field_bytes: int = 256 * 1024


def read_into(raw: IO[bytes], buffer: WriteableBuffer) -> bytes:
    """``RawIOBase.readinto`` over a stream that only has ``read``: the bytes read, also in ``buffer``."""
    with memoryview(buffer) as view:
        data = raw.read(len(view))
        view[: len(data)] = data
    return data


class ByteCounter(io.RawIOBase):
    """A read-only stream that counts the bytes read through it (the progress of an ingest)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        data = read_into(self._raw, buffer)
        self.count += len(data)
        return len(data)


class ExpansionGuard(io.RawIOBase):
    """Decompressed bytes, refused once they outgrow the limits against the compressed bytes read.

    Judged against what the decompressor has read so far, not the whole file's
    size: a bomb is stopped as soon as it starts to expand (the decompressor
    reads 64 KB at a time), not once it has expanded to 100 times the file.
    """

    def __init__(
        self, decompressed: IO[bytes], *, compressed_read: Callable[[], int], limits: Limits
    ) -> None:
        self._inner = decompressed
        self._compressed_read = compressed_read
        self._limits = limits
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        data = read_into(self._inner, buffer)
        self.count += len(data)
        expansion_check(self.count, self._compressed_read(), self._limits)
        return len(data)


def expansion_check(expanded: int, compressed: int, limits: Limits) -> None:
    if expanded > limits.max_expanded_bytes:
        raise IngestRefused(
            f"The file expands to more than {limits.max_expanded_bytes} bytes; it was refused."
        )
    ratio = expanded / max(compressed, 1)
    if expanded > limits.ratio_grace_bytes and ratio > limits.max_expansion_ratio:
        raise IngestRefused(
            f"The file expands more than {limits.max_expansion_ratio:.0f} times its compressed size "
            "(a compression bomb?); it was refused."
        )


def compression_sniff(head: bytes) -> Compression:
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(ZSTD_MAGIC):
        return Compression.ZSTD
    return Compression.NONE


# Folders hold names of at most 255 bytes, and the name is stored in a 255-character column.
MAX_FILENAME_BYTES = 200
# Percent-decoding is repeated, so that a name encoded twice over ("%252e") still comes out as
# what it spells; a few rounds undo any encoding a client plausibly applied.
_DECODE_ROUNDS = 4


def _invisible(char: str) -> bool:
    """Control, format (bidirectional overrides, zero-width), surrogate, unassigned and line-separator
    characters: none of them is seen, and some change how the rest of a name is shown or read."""
    category = unicodedata.category(char)
    return category[0] == "C" or category in ("Zl", "Zp")


def filename_normalize(name: str) -> str:
    """The name an uploaded file is kept and shown under; the one place such a name is made.

    Only ever a label: a staged file's name on disk is its upload's id. Unicode
    NFKC (full-width dots and slashes become plain ones) and percent-encoding
    are undone, so that what is checked next is what the name spells; control
    and bidirectional characters are dropped (a right-to-left override shows
    "txt.exe" as "exe.txt", a CR LF splits a header); only the last part of a
    path is kept; and a long name is shortened to MAX_FILENAME_BYTES of UTF-8,
    keeping its extensions, which tell its format. Refused only when no name is left.
    """
    cleaned, previous = name, None
    for _ in range(_DECODE_ROUNDS):
        if cleaned == previous:
            break
        previous = cleaned
        cleaned = unicodedata.normalize("NFKC", unquote(cleaned))
    cleaned = "".join(char for char in cleaned if not _invisible(char))
    # Dots and spaces at either end are dropped too: ".." is no name, and "data.jsonl." hides its extension.
    cleaned = cleaned.replace("\\", "/").rpartition("/")[2].strip(" .")
    if not cleaned:
        raise IngestRefused(
            f"The file name {clipped(name, 60)!r} holds no name once its folders and invisible "
            "characters are left out; send a plain file name like 'data.jsonl'."
        )
    encoded = cleaned.encode("utf-8")
    if len(encoded) <= MAX_FILENAME_BYTES:
        return cleaned
    stem, dot, extensions = cleaned.partition(".")
    suffix = (dot + extensions).encode("utf-8")
    if len(suffix) > 32:
        # Dots inside a long name: keep only what follows the last one.
        stem, dot, extension = cleaned.rpartition(".")
        suffix = (dot + extension).encode("utf-8")[:32]
    # A character cut in half is dropped rather than stored broken.
    kept = stem.encode("utf-8")[: MAX_FILENAME_BYTES - len(suffix)].decode("utf-8", errors="ignore")
    return kept + suffix.decode("utf-8", errors="ignore")


def _stem_format(name: str) -> FileFormat | None:
    lowered = name.lower()
    for suffix in (".gz", ".gzip", ".zst", ".zstd"):
        if lowered.endswith(suffix):
            lowered = lowered[: -len(suffix)]
    if lowered.endswith((".jsonl", ".ndjson")):
        return FileFormat.JSONL
    if lowered.endswith(".json"):
        return FileFormat.JSON
    if lowered.endswith((".csv", ".tsv")):
        return FileFormat.CSV
    if lowered.endswith(".parquet"):
        return FileFormat.PARQUET
    if lowered.endswith((".zip", ".tar", ".tgz")):
        return FileFormat.HF_DATASET
    return None


def _name_compression(name: str) -> Compression:
    lowered = name.lower()
    if lowered.endswith((".gz", ".gzip", ".tgz")):
        return Compression.GZIP
    if lowered.endswith((".zst", ".zstd")):
        return Compression.ZSTD
    return Compression.NONE


def source_expands(path: Path, filename: str) -> bool:
    """Whether reading the file means decompressing or unpacking it, by its name or its first bytes.

    Such a file is read by the control worker only, however small: a few
    kilobytes of it can expand to gigabytes. Parquet counts: its pages are compressed.
    """
    with path.open("rb") as probe:
        head = probe.read(8)
    return (
        compression_sniff(head) is not Compression.NONE
        or head.startswith((ZIP_MAGIC, PARQUET_MAGIC))
        or _name_compression(filename) is not Compression.NONE
        or _stem_format(filename) in (FileFormat.PARQUET, FileFormat.HF_DATASET)
    )


_COMPRESSION_WORDS = {
    Compression.NONE: "not compressed",
    Compression.GZIP: "gzip-compressed",
    Compression.ZSTD: "zstd-compressed",
}


def _name_matches_content(filename: str, head: bytes) -> None:
    """Refuse a file whose name tells another format than its first bytes: one of the two is wrong,
    and reading it as either could store something other than what its sender meant."""
    named = _stem_format(filename)
    shown = clipped(filename, 80)
    if head.startswith(ZIP_MAGIC) and named not in (None, FileFormat.HF_DATASET):
        raise IngestRefused(f"{shown!r} is named as {named.value} but holds a zip archive; name it '.zip'.")
    if head.startswith(PARQUET_MAGIC) and named not in (None, FileFormat.PARQUET):
        raise IngestRefused(f"{shown!r} is named as {named.value} but holds Parquet; name it '.parquet'.")
    if named is FileFormat.HF_DATASET or head.startswith((ZIP_MAGIC, PARQUET_MAGIC)):
        return  # an archive or Parquet: read as one, and refused if it is not
    declared, found = _name_compression(filename), compression_sniff(head)
    if named is None and declared is Compression.NONE:
        return  # a name that tells nothing ("data", "rows.txt"): the content tells
    if declared is not found:
        raise IngestRefused(
            f"{shown!r} is named as {_COMPRESSION_WORDS[declared]} but its content is "
            f"{_COMPRESSION_WORDS[found]}; name the file for what it holds "
            "(such as 'data.jsonl', or 'data.jsonl.gz' for a gzip-compressed one)."
        )


def text_format_sniff(head: bytes) -> FileFormat:
    """JSONL or a JSON array, by the first character that is not a space or a byte-order mark."""
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return FileFormat.JSON if stripped.startswith(b"[") else FileFormat.JSONL


@dataclass
class OpenedSource:
    """A file ready to read: a decompressed byte stream, or a folder an archive was unpacked to."""

    format: FileFormat
    compression: Compression
    stream: io.BufferedReader | None
    path: Path | None
    counter: ByteCounter | None
    total_bytes: int

    def consumed(self) -> int:
        """Bytes of the stored file read so far, for progress."""
        if self.counter is not None:
            return self.counter.count
        if self.stream is not None:
            return self.stream.tell()
        return self.total_bytes

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


def source_open(path: Path, *, filename: str, limits: Limits, unpack_dir: Path) -> OpenedSource:
    """Open a stored upload for reading, telling its format from its name and its first bytes."""
    total = path.stat().st_size
    with path.open("rb") as probe:
        head = probe.read(4096)
    _name_matches_content(filename, head)
    # Archives are told by their name as well: probing a compressed text file as a tar would
    # decompress it.
    if head.startswith(ZIP_MAGIC) or _stem_format(filename) is FileFormat.HF_DATASET:
        return OpenedSource(
            FileFormat.HF_DATASET,
            Compression.NONE,
            None,
            _archive_unpack(path, unpack_dir, limits),
            None,
            total,
        )
    if head.startswith(PARQUET_MAGIC):
        return OpenedSource(FileFormat.PARQUET, Compression.NONE, None, path, None, total)
    compression = compression_sniff(head)
    counter: ByteCounter | None = None
    stream: io.BufferedReader
    if compression is Compression.NONE:
        # Read straight from the file (no counting layer to copy through); progress is its position.
        stream = path.open("rb")
        text_head = head
    else:
        compressed = counter = ByteCounter(path.open("rb"))
        codec = "gzip" if compression is Compression.GZIP else "zstd"
        decompressed = pa.CompressedInputStream(pa.PythonFile(compressed, mode="r"), codec)
        guard = ExpansionGuard(decompressed, compressed_read=lambda: compressed.count, limits=limits)
        stream = io.BufferedReader(guard, buffer_size=1024 * 1024)
        try:
            text_head = stream.peek(4096)[:4096]
        except (OSError, EOFError, pa.ArrowException) as exc:
            raise IngestRefused(f"The {codec} file could not be decompressed: {exc}") from exc
    file_format = _stem_format(filename)
    if file_format in (None, FileFormat.JSON):
        # Many ".json" files hold one object per line; a ".jsonl" name is taken at its word.
        file_format = text_format_sniff(text_head)
    if file_format in (FileFormat.PARQUET, FileFormat.HF_DATASET):
        stream.close()
        raise IngestRefused(
            f"{clipped(filename, 80)!r} is named as {file_format.value} but its content is not."
        )
    return OpenedSource(file_format, compression, stream, None, counter, total)


def _member_check(name: str) -> PurePosixPath:
    member = PurePosixPath(name)
    if member.is_absolute() or ".." in member.parts or "\\" in name or name.startswith("/"):
        raise IngestRefused(f"The archive holds a path outside itself ({name!r}); it was refused.")
    return member


def _archive_unpack(path: Path, target: Path, limits: Limits) -> Path:
    """Unpack a zip or tar archive (a saved Hugging Face dataset) with every path and size checked."""
    target.mkdir(parents=True, exist_ok=True)
    compressed = path.stat().st_size
    expanded = 0
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > limits.max_archive_members:
                raise IngestRefused(f"The archive holds more than {limits.max_archive_members} files.")
            # Declared sizes can lie, so the bytes written are counted too.
            expansion_check(sum(m.file_size for m in members), compressed, limits)
            for member in members:
                relative = _member_check(member.filename)
                if member.is_dir():
                    continue
                out_path = target / relative
                out_path.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, out_path.open("wb") as out:
                    while chunk := source.read(1024 * 1024):
                        expanded += len(chunk)
                        expansion_check(expanded, compressed, limits)
                        out.write(chunk)
    else:
        try:
            tarball = tarfile.open(path)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise IngestRefused(f"The archive could not be read: {exc}") from exc
        with tarball:
            count = 0
            for entry in tarball:
                count += 1
                if count > limits.max_archive_members:
                    raise IngestRefused(f"The archive holds more than {limits.max_archive_members} files.")
                relative = _member_check(entry.name)
                if entry.isdir():
                    continue
                if not entry.isfile():
                    raise IngestRefused(
                        f"The archive holds a link or device ({entry.name!r}); it was refused."
                    )
                extracted = tarball.extractfile(entry)
                assert extracted is not None  # a regular file always has content
                out_path = target / relative
                out_path.parent.mkdir(parents=True, exist_ok=True)
                with out_path.open("wb") as out:
                    while chunk := extracted.read(1024 * 1024):
                        expanded += len(chunk)
                        expansion_check(expanded, compressed, limits)
                        out.write(chunk)
    return hf_dataset_root(target)


def hf_dataset_root(unpacked: Path) -> Path:
    """The folder holding a saved dataset's ``state.json`` (the archive may wrap it in one folder)."""
    states = sorted(unpacked.rglob("state.json"), key=lambda p: len(p.parts))
    if not states:
        raise IngestRefused(
            "The archive is not a saved Hugging Face dataset (no state.json); "
            "upload the folder written by Dataset.save_to_disk, zipped."
        )
    return states[0].parent


def hf_dataset_files(root: Path) -> list[Path]:
    """The Arrow files of a saved dataset, in the order its ``state.json`` lists them."""
    try:
        state = json.loads((root / "state.json").read_text())
        names = [entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IngestRefused(f"The saved dataset's state.json could not be read: {exc}") from exc
    files = []
    for name in names:
        if not isinstance(name, str) or "\x00" in name:
            raise IngestRefused(
                f"The saved dataset's state.json names a data file {name!r}, which is no file name."
            )
        file = (root / _member_check(name)).resolve()
        if not file.is_relative_to(root.resolve()) or not file.is_file():
            raise IngestRefused(f"The saved dataset names a missing data file {name!r}.")
        files.append(file)
    if not files:
        raise IngestRefused("The saved dataset has no data files.")
    return files
