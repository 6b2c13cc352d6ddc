"""The control plane's only door to MLflow: artifacts, registered models, aliases, links.

Every call is a network call: callers make them outside database transactions.
MLflow's own failures surface as ``ServiceUnavailable`` (503), so a page or an
API client can say "MLflow did not answer" instead of crashing.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlparse

# MLflow retries a dead server for minutes by default; a web request must not hang that long.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
# No usage reports from our servers (there may be no way out anyway), and MLflow
# 3's telemetry thread races on its own environment variable, failing calls.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Nor "View run ... at <url>" lines in the control worker's log.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

from django.conf import settings  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import RunStatus  # noqa: E402
from mlflow.exceptions import MlflowException, RestException  # noqa: E402

from controlplane.errors import ServiceUnavailable  # noqa: E402


def _client() -> MlflowClient:
    return MlflowClient(tracking_uri=settings.MLFLOW_TRACKING_URI)


@contextmanager
def _mlflow_errors(action: str) -> Iterator[None]:
    try:
        yield
    except (MlflowException, OSError) as exc:
        raise ServiceUnavailable(f"MLflow could not {action}: {str(exc)[:300]}") from exc


def _experiment_id(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except RestException:
        # Another process created it between our read and our create.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def artifact_upload(
    local_path: Path, *, experiment: str, run_name: str, artifact_path: str, tags: dict[str, str]
) -> str:
    """Store a file or folder in MLflow's artifact store; returns a URI any worker can read."""
    with _mlflow_errors("store the artifact"):
        client = _client()
        run = client.create_run(_experiment_id(client, experiment), run_name=run_name, tags=tags)
        run_id = run.info.run_id
        if local_path.is_dir():
            client.log_artifacts(run_id, str(local_path), artifact_path)
            uri = f"runs:/{run_id}/{artifact_path}"
        else:
            client.log_artifact(run_id, str(local_path), artifact_path)
            uri = f"runs:/{run_id}/{artifact_path}/{local_path.name}"
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    return uri


def artifact_download(uri: str, *, dst: Path) -> Path:
    """A local copy of the artifact at ``uri``, downloaded under ``dst``."""
    import mlflow.artifacts

    with _mlflow_errors("fetch the artifact"):
        dst.mkdir(parents=True, exist_ok=True)
        return Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(dst), tracking_uri=settings.MLFLOW_TRACKING_URI
            )
        )


# What a tokenizer is made of; a model's weights are left where they are.
TOKENIZER_FILES = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "vocab.txt",
        "merges.txt",
        "tokenizer.model",
        "config.json",
    }
)


def tokenizer_download(uri: str, *, dst: Path) -> Path:
    """Only the tokenizer files of a model stored at a ``runs:/<run>/<path>`` URI; returns their folder."""
    run_id, _, path = uri.removeprefix("runs:/").partition("/")
    dst.mkdir(parents=True, exist_ok=True)
    with _mlflow_errors("fetch the tokenizer"):
        client = _client()
        for item in client.list_artifacts(run_id, path or None):
            if not item.is_dir and item.path.rsplit("/", 1)[-1] in TOKENIZER_FILES:
                # Each file lands in dst itself, whatever its folder in the run.
                client.download_artifacts(run_id, item.path, str(dst))
    return dst


def model_version_register(*, name: str, source: str, run_id: str | None) -> int:
    """Register ``source`` as a new version of the registered model ``name``; returns its number."""
    with _mlflow_errors("register the model version"):
        client = _client()
        try:
            client.create_registered_model(name)
        except RestException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = client.create_model_version(name=name, source=source, run_id=run_id)
    return int(version.version)


def alias_get(*, name: str, alias: str) -> int | None:
    with _mlflow_errors("read the alias"):
        try:
            return int(_client().get_model_version_by_alias(name, alias).version)
        except RestException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise


def alias_set(*, name: str, alias: str, version: int) -> None:
    with _mlflow_errors("set the alias"):
        _client().set_registered_model_alias(name, alias, str(version))


def alias_delete(*, name: str, alias: str) -> None:
    with _mlflow_errors("delete the alias"):
        _client().delete_registered_model_alias(name, alias)


def run_url(run_id: str) -> str:
    """The MLflow UI page of a run, for a person's browser."""
    with _mlflow_errors("find the run"):
        experiment_id = _client().get_run(run_id).info.experiment_id
    base = settings.MLFLOW_PUBLIC_URL.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def run_experiment_name(run_id: str) -> str | None:
    """The name of the experiment run ``run_id`` is in; None when MLflow has no such run."""
    with _mlflow_errors("find the run"):
        client = _client()
        try:
            run = client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        return client.get_experiment(run.info.experiment_id).name


def model_config_read(uri: str) -> dict | None:
    """The ``config.json`` of the model stored at ``uri``, fetched alone (never the weights).

    None when there is none to read cheaply: a hub id (the control plane does
    not reach a model hub) or a path that is not on this machine.
    """
    parsed = urlparse(uri)
    if parsed.scheme == "runs":
        with tempfile.TemporaryDirectory(prefix="tuneyard-config-") as tmp:
            local = artifact_download(f"{uri.rstrip('/')}/config.json", dst=Path(tmp))
            return json.loads(local.read_text())
    path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(uri).expanduser()
    if not path.is_absolute() or not (path / "config.json").is_file():
        return None
    return json.loads((path / "config.json").read_text())


# A per-row table is read whole to be shown: bigger than this, it is refused rather than parsed.
TABLE_MAX_BYTES = 20 * 1024 * 1024


# Parquet files start and end with these four bytes.
PARQUET_MAGIC = b"PAR1"
# Decompressed, a Parquet table may grow far past its file size: its rows are capped as well.
TABLE_MAX_ROWS = 100_000


def table_read(uri: str) -> list[dict]:
    """The rows of a table a run logged: a Parquet file (an evaluation's per-row predictions), or
    MLflow's JSON "split" layout (``columns`` and ``data``) that earlier evaluations logged.

    Only a ``runs:/`` URI is read: the URI comes from a worker's report, and
    must not make the control plane open its own files. A table that is
    neither, or too big, raises ValueError.
    """
    if not uri.startswith("runs:/"):
        raise ValueError("a table is read from a runs:/ URI only")
    with tempfile.TemporaryDirectory(prefix="tuneyard-table-") as tmp:
        local = artifact_download(uri, dst=Path(tmp))
        if not local.is_file():
            raise ValueError("the table is not a file")
        if local.stat().st_size > TABLE_MAX_BYTES:
            raise ValueError(f"the table is over {TABLE_MAX_BYTES // 2**20} MB")
        with local.open("rb") as head:
            magic = head.read(len(PARQUET_MAGIC))
        if magic == PARQUET_MAGIC:
            return _parquet_rows(local)
        try:
            body = json.loads(local.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError("the table is neither Parquet nor JSON") from exc
    columns, data = (body.get("columns"), body.get("data")) if isinstance(body, dict) else (None, None)
    if not isinstance(columns, list) or not isinstance(data, list):
        raise ValueError("the table has no columns and data")
    return [dict(zip(columns, row, strict=False)) for row in data if isinstance(row, list)]


def _parquet_rows(local: Path) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(local)
        if parquet.metadata.num_rows > TABLE_MAX_ROWS:
            raise ValueError(f"the table has over {TABLE_MAX_ROWS} rows")
        return parquet.read().to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"the table is not readable Parquet: {str(exc)[:200]}") from exc


# --- model cards -------------------------------------------------------------------------------

# MLflow keeps at most this many characters of a model version's description (its database
# column); a longer card is cut there, and the whole of it is in the run's artifacts.
DESCRIPTION_MAX_CHARS = 5000
# A registered model version's tag that says a promotion's card is stored, and which card: it is
# set last, so a send that failed halfway is sent again whole.
CARD_TAG_PREFIX = "tuneyard.model_card."


def run_tags(run_id: str) -> dict[str, str]:
    """The tags of run ``run_id``; empty when MLflow has no such run."""
    with _mlflow_errors("read the run's tags"):
        try:
            return dict(_client().get_run(run_id).data.tags)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return {}
            raise


def model_card_log(
    *, name: str, version: int, run_id: str | None, card_key: str, markdown: str, data: dict, digest: str
) -> bool:
    """Store a model card beside the registered model version ``name``/``version``.

    The Markdown becomes the version's description, and ``model_card.md`` and
    ``model_card.json`` go into the training run's artifacts under
    ``model_card/<card_key>/``. Safe to call again: a card whose tag already
    carries ``digest`` is not sent twice (returns False; True when it was sent).
    """
    tag = f"{CARD_TAG_PREFIX}{card_key}"
    with _mlflow_errors("store the model card"):
        client = _client()
        if client.get_model_version(name, str(version)).tags.get(tag) == digest:
            return False
        if run_id:
            with tempfile.TemporaryDirectory(prefix="tuneyard-card-") as tmp:
                (Path(tmp) / "model_card.md").write_text(markdown)
                (Path(tmp) / "model_card.json").write_text(json.dumps(data, indent=2, sort_keys=True))
                client.log_artifacts(run_id, tmp, f"model_card/{card_key}")
        description = markdown
        if len(description) > DESCRIPTION_MAX_CHARS:
            cut = "\n\n… (cut here: the whole card is the run's model_card.md)"
            description = description[: DESCRIPTION_MAX_CHARS - len(cut)] + cut
        client.update_model_version(name, str(version), description=description)
        client.set_model_version_tag(name, str(version), tag, digest)
    return True
