"""What an upload or an operation on a dataset version may ask for: the request models of the
API and the pages, each validated once at the edge; services receive their typed values."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from django.core.files.uploadedfile import UploadedFile
from django.utils.datastructures import MultiValueDict
from pydantic import AfterValidator, BeforeValidator, Discriminator, Field, RootModel, Tag, model_validator

from controlplane.api_common import Id, ProjectRequest, RequestModel, Whole
from controlplane.datasets.ingest.problems import clipped
from controlplane.datasets.preview import PREVIEW_MAX_ROWS
from controlplane.errors import ValidationFailed
from workers.spec import DatasetSchema

# Mapping entries are column names: short, and free of the NUL byte PostgreSQL cannot store.
MAX_MAPPING_NAME_CHARS = 200


def _blank_is_none(value: Any) -> Any:
    # A form sends an empty field for "not given".
    return None if value == "" else value


def _mapping_text(value: Any) -> Any:
    """A form field carries the mapping as JSON text; a JSON body as an object."""
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            raise ValueError('must be a JSON object like {"instruction": "question"}') from None
    return value


def _mapping_names(mapping: dict[str, str]) -> dict[str, str]:
    for name in (*mapping.keys(), *mapping.values()):
        if not name or "\x00" in name or len(name) > MAX_MAPPING_NAME_CHARS:
            raise ValueError(
                f"names {name[:40]!r}, which is no column name "
                f"(1 to {MAX_MAPPING_NAME_CHARS} characters, no NUL byte)"
            )
    return mapping


# Which of our fields (instruction, output, ...) is read from which of the file's columns.
ColumnMapping = Annotated[dict[str, str], BeforeValidator(_mapping_text), AfterValidator(_mapping_names)]


def upload_file(files: MultiValueDict[str, UploadedFile]) -> UploadedFile | None:
    """The one file of an upload, or None. Two 'file' parts are refused rather than one of them read."""
    sent = files.getlist("file")
    if len(sent) > 1:
        raise ValidationFailed(f"The upload holds {len(sent)} 'file' parts; send one file per upload.")
    return sent[0] if sent else None


def form_fields(fields: Mapping[str, Any], *, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """A form's fields, each sent once: a field sent twice is refused rather than read as its last value."""
    if isinstance(fields, MultiValueDict):
        for key, values in fields.lists():
            if len(values) > 1 and key not in leave_out:
                raise ValidationFailed(
                    f"The field {clipped(key, 40)!r} is sent {len(values)} times; send it once."
                )
        fields = fields.dict()
    return {key: value for key, value in fields.items() if key not in leave_out}


class IngestRequest(ProjectRequest):
    """An upload's settings (the file travels beside them). ``tokenizer`` names a base model of the
    project whose tokenizer measures the rows; ``max_tokens`` then refuses longer rows."""

    name: str = Field(default="", max_length=100)
    # Left out: detected from the file's columns.
    schema_: Annotated[DatasetSchema | None, BeforeValidator(_blank_is_none)] = Field(
        default=None, alias="schema"
    )
    mapping: ColumnMapping = Field(default_factory=dict)
    tokenizer: Annotated[Id | None, BeforeValidator(_blank_is_none)] = None
    max_tokens: Annotated[
        Annotated[Whole, Field(ge=1, le=10_000_000)] | None, BeforeValidator(_blank_is_none)
    ] = None

    @model_validator(mode="after")
    def _max_tokens_needs_a_tokenizer(self) -> IngestRequest:
        if self.max_tokens is not None and self.tokenizer is None:
            raise ValueError("'max_tokens' needs a 'tokenizer' (a base model) to count tokens with")
        return self


class UploadFinishRequest(IngestRequest):
    """The settings of an upload sent in pieces, given when its last piece is in."""


class UploadBeginRequest(ProjectRequest):
    """A resumable upload of a file of ``size`` bytes named ``filename``."""

    filename: str = Field(max_length=10_000)  # its own rules (length, characters) are checked by ingest
    size: Annotated[Whole, Field(ge=1)]


class RowsQuery(RequestModel):
    offset: Annotated[Whole, Field(ge=0, le=2**40)] = 0
    limit: Annotated[Whole, Field(ge=0, le=PREVIEW_MAX_ROWS)] = 20


class DedupRequest(RequestModel):
    kind: Literal["dedup"]
    threshold: float = Field(
        default=0.8, ge=0.5, le=1.0, description="similarity above which rows are duplicates"
    )


class SplitRequest(RequestModel):
    kind: Literal["split"]
    train: float = Field(default=0.0, ge=0, le=1)
    validation: float = Field(default=0.0, ge=0, le=1)
    test: float = Field(default=0.0, ge=0, le=1)
    seed: Annotated[Whole, Field(ge=0, lt=2**32)] = 42

    @model_validator(mode="after")
    def _fractions_add_up(self) -> SplitRequest:
        if abs(self.train + self.validation + self.test - 1) > 1e-6:
            raise ValueError("'train', 'validation' and 'test' are fractions from 0 to 1 that add up to 1")
        return self

    @property
    def fractions(self) -> dict[str, float]:
        parts = {"train": self.train, "validation": self.validation, "test": self.test}
        return {part: fraction for part, fraction in parts.items() if fraction > 0}


class ContaminationRequest(RequestModel):
    kind: Literal["contamination"]
    train_version: Id  # the training version (of the same project) to look for this version's rows in


class PiiScanRequest(RequestModel):
    kind: Literal["pii_scan"]


def _operation_kind(body: Any) -> str | None:
    kind = body.get("kind") if isinstance(body, dict) else getattr(body, "kind", None)
    return kind if isinstance(kind, str) else None


class OperationRequest(
    RootModel[
        Annotated[
            Annotated[DedupRequest, Tag("dedup")]
            | Annotated[SplitRequest, Tag("split")]
            | Annotated[ContaminationRequest, Tag("contamination")]
            | Annotated[PiiScanRequest, Tag("pii_scan")],
            Discriminator(
                _operation_kind,
                custom_error_type="operation_kind",
                custom_error_message="'kind' is one of dedup, split, contamination, pii_scan",
            ),
        ]
    ]
):
    """Dedup, a split, a contamination check or a PII scan of a version (told apart by ``kind``)."""


OperationOptions = DedupRequest | SplitRequest | ContaminationRequest | PiiScanRequest
