"""Reading an uploaded JSONL instruction file: every line checked, nothing kept on failure.

The file is read as a stream, one line at a time, so its size is bounded by
the upload limit, not by memory. The hash is over the normalized rows, so the
same content with other whitespace or key order is the same version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import IO

from pydantic import ValidationError

from controlplane.errors import ValidationFailed
from workers.spec import InstructionRow

MAX_REPORTED_ERRORS = 20


@dataclass
class InstructionFileSummary:
    row_count: int = 0
    sha256: str = ""
    errors: list[str] = field(default_factory=list)


BOM = b"\xef\xbb\xbf"


def _row_parse(line_number: int, raw: bytes) -> InstructionRow | str:
    """The row on this line, or a sentence saying what is wrong with it."""
    if line_number == 1 and raw.startswith(BOM):
        raw = raw[len(BOM) :]  # editors on Windows start UTF-8 files with a byte-order mark
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return f"line {line_number}: is not UTF-8 text"
    except json.JSONDecodeError as exc:
        return f"line {line_number}: is not valid JSON ({exc.msg})"
    if not isinstance(data, dict):
        return f"line {line_number}: must be a JSON object with 'instruction' and 'output'"
    try:
        return InstructionRow.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "row"
        reason = "is missing" if first["type"] == "missing" else first["msg"].lower()
        return f"line {line_number}: '{where}' {reason}"


def instruction_file_check(stream: IO[bytes]) -> InstructionFileSummary:
    """Validate every line; raise ValidationFailed naming the bad lines, else return the summary."""
    summary = InstructionFileSummary()
    digest = hashlib.sha256()
    error_count = 0
    for line_number, raw in enumerate(stream, start=1):
        if not raw.strip():
            continue
        row = _row_parse(line_number, raw)
        if isinstance(row, str):
            error_count += 1
            if len(summary.errors) < MAX_REPORTED_ERRORS:
                summary.errors.append(row)
            continue
        digest.update(row.model_dump_json().encode() + b"\n")
        summary.row_count += 1
    if error_count:
        hidden = error_count - len(summary.errors)
        more = f" (and {hidden} more)" if hidden else ""
        raise ValidationFailed(
            f"{error_count} bad line(s); nothing was stored. {summary.errors[0]}{more}",
            details={"errors": summary.errors, "error_count": error_count},
        )
    if summary.row_count == 0:
        raise ValidationFailed("The file has no rows; nothing was stored.")
    summary.sha256 = digest.hexdigest()
    return summary
