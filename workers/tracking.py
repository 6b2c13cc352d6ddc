"""The one worker-side module that talks to MLflow.

Everything else on the worker side (the engine, the runner) goes through the
two things here: ``download`` to turn a URI from a JobSpec into something
``from_pretrained`` or ``open`` can use, and ``RunLogger`` to record one
training attempt as one MLflow run. The tracking server comes from the
``MLFLOW_TRACKING_URI`` environment variable, as MLflow itself reads it.

This module must not import torch: the Celery worker parent imports it, and
torch loaded before a fork deadlocks the child (see ENVIRONMENT.md).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from types import TracebackType

# Before MLflow loads (here and in every trainer, which inherits it): no usage
# reports from GPU hosts, and MLflow 3's telemetry thread races on its own
# environment variable, failing a tracking call now and then.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# A run's end prints "View run ... at <url>" to stdout: a job's log is its own output only.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

import mlflow.artifacts  # noqa: E402
from mlflow.entities import Metric, Param, RunStatus, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.protos.databricks_pb2 import (  # noqa: E402
    INVALID_PARAMETER_VALUE,
    INVALID_STATE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.tracking import MlflowClient  # noqa: E402

from workers.uris import (  # noqa: E402
    HubModel,
    LocalModel,
    UriRefused,
    UriRule,
    UriScope,
    local_tree_check,
    model_uri_check,
)

# A metric buffer is sent when it holds this many points or is this old,
# whichever comes first: one HTTP call costs ~20 ms, so a call per point
# would slow a fast training loop, while a few seconds of delay in the MLflow
# UI costs nothing (live progress travels through the engine's stdout). The
# sending happens on a thread of its own, so the training loop never waits on
# the network, except in an explicit ``flush``.
FLUSH_POINTS = 1000
# MLflow's own tag listing a run's tables (mlflow.utils.mlflow_tags.MLFLOW_LOGGED_ARTIFACTS).
LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"
FLUSH_SECONDS = 5.0


def download(uri: str, dst: Path, *, scope: UriScope) -> Path | str:
    """Make ``uri`` usable on this machine, once the rule of ``workers.uris`` admits it for ``scope``.

    The rule is checked here again, whatever the control plane checked: a spec
    may name a URI stored before the rule existed, and the roots are this
    machine's. A refused URI raises ``UriRefused`` before anything is read.
    Returns a ``Path`` to local files, or the ``str`` repository id of a hub
    model that ``from_pretrained`` fetches itself:

    * ``runs:/``, ``models:/`` and URIs under an object-store root: downloaded
      under ``dst``, returns the downloaded file or directory;
    * a path or ``file://`` URI under a local root: that path, resolved, nothing
      is copied (a path that does not exist is returned all the same, so the
      caller's error names the missing file);
    * a hub id: the id, or with ``@revision`` that revision's snapshot in the
      hub cache (``from_pretrained`` takes no revision inside the id).
    """
    source = model_uri_check(uri, scope, run_experiment_name)
    if isinstance(source, HubModel):
        if source.revision is not None:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(source.repo_id, revision=source.revision))
        if Path(source.repo_id).exists():
            # from_pretrained would read that folder instead of asking the hub.
            raise UriRefused(UriRule.HUB_ID, uri, "it also names a folder on this machine")
        return source.repo_id
    if isinstance(source, LocalModel):
        local_tree_check(source.path, scope)
        return source.path
    dst.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=source.uri, dst_path=str(dst)))


def run_experiment_name(run_id: str) -> str | None:
    """The name of the experiment run ``run_id`` is in; None when there is no such run."""
    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code in (
            ErrorCode.Name(RESOURCE_DOES_NOT_EXIST),
            ErrorCode.Name(INVALID_PARAMETER_VALUE),
        ):
            return None
        raise
    return client.get_experiment(run.info.experiment_id).name


# The libraries a model's training depends on, logged as run tags ``tuneyard.library.<name>``.
LIBRARIES = ("torch", "transformers", "peft", "trl", "accelerate")
LIBRARY_TAG_PREFIX = "tuneyard.library."


def library_tags() -> dict[str, str]:
    """This machine's versions of ``LIBRARIES`` and of Python, as run tags; a missing one is left out.

    Read from the installed packages' metadata: importing torch here would deadlock forked children.
    """
    tags = {f"{LIBRARY_TAG_PREFIX}python": platform.python_version()}
    for name in LIBRARIES:
        try:
            tags[f"{LIBRARY_TAG_PREFIX}{name}"] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return tags


class RunEnd(StrEnum):
    """How a run ends; the values are MLflow's run statuses."""

    FINISHED = RunStatus.to_string(RunStatus.FINISHED)
    FAILED = RunStatus.to_string(RunStatus.FAILED)
    # Stopped on purpose (a cancelled job), not broken.
    KILLED = RunStatus.to_string(RunStatus.KILLED)


class RunLogger:
    """One MLflow run: params, buffered metrics, artifacts, and how it ended.

    Used as a context manager, the run ends FINISHED when the block returns,
    KILLED when it is interrupted (``KeyboardInterrupt``, which is what the
    engine turns SIGTERM into) and FAILED when it raises anything else. The
    metrics still buffered are sent first in every case.
    """

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self._metrics = MetricSender(lambda points: client.log_batch(run_id, metrics=points))
        self._ended = False

    @classmethod
    def start(
        cls,
        *,
        experiment: str,
        run_name: str,
        tags: Mapping[str, str],
        run_id: str | None = None,
    ) -> RunLogger:
        """Start a run in ``experiment`` (created when missing), or resume ``run_id``.

        Resuming (``run_name`` is then ignored) lets a retried delivery of the
        same attempt keep logging into the run it already announced instead of
        leaving an orphan behind.
        """
        client = MlflowClient()
        # What the run was made with, so a model card can say (the caller's tags win a clash).
        tags = {**library_tags(), **tags}
        if run_id is not None:
            client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])
            return cls(client, run_id)
        run = client.create_run(
            experiment_id=_experiment_id(client, experiment),
            run_name=run_name,
            tags=dict(tags),
        )
        return cls(client, run.info.run_id)

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.end(RunEnd.FINISHED)
        elif issubclass(exc_type, KeyboardInterrupt):
            self.end(RunEnd.KILLED)
        else:
            self.end(RunEnd.FAILED)

    def log_params(self, params: Mapping[str, object]) -> None:
        """Log params in one call; values become strings (``None`` as ``"None"``)."""
        self.client.log_batch(self.run_id, params=[Param(key, str(value)) for key, value in params.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer one point per metric; sent in the background, see ``FLUSH_POINTS``/``FLUSH_SECONDS``."""
        now_ms = int(time.time() * 1000)
        self._metrics.add([Metric(key, float(value), now_ms, step) for key, value in metrics.items()])

    def flush(self) -> None:
        """Return once every metric point logged so far is stored (or raise why it could not be)."""
        self._metrics.flush()

    def log_artifacts(self, local_dir: Path, name: str) -> str:
        """Upload ``local_dir`` as artifact ``name``; return a URI that other machines can read.

        The URI is ``runs:/<run_id>/<name>``: it does not depend on where the
        server stores artifacts, ``download`` resolves it, and the model
        registry accepts it as a version's source when given the same run id.
        """
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path=name)
        return f"runs:/{self.run_id}/{name}"

    def log_table(self, table: Mapping[str, list], artifact_file: str, scratch: Path) -> str:
        """Store ``table`` ({"columns": [...], "data": [[...], ...]}, MLflow's JSON layout) as the run's
        ``artifact_file`` and list it among the run's tables; returns its ``runs:/`` URI.

        Not ``MlflowClient.log_table``: that appends to a table already there, so a
        retried attempt, which logs into the same run, would double its rows.
        """
        scratch.mkdir(parents=True, exist_ok=True)
        local = scratch / Path(artifact_file).name
        local.write_text(json.dumps(table, ensure_ascii=False))
        self.client.log_artifact(self.run_id, str(local))
        # Where MLflow's UI (its evaluation view) looks for a run's tables.
        logged = json.loads(self.client.get_run(self.run_id).data.tags.get(LOGGED_ARTIFACTS_TAG, "[]"))
        entry = {"path": local.name, "type": "table"}
        if entry not in logged:
            self.client.set_tag(self.run_id, LOGGED_ARTIFACTS_TAG, json.dumps([*logged, entry]))
        return f"runs:/{self.run_id}/{local.name}"

    def end(self, how: RunEnd) -> None:
        """Send pending metrics and close the run; a second call does nothing."""
        if self._ended:
            return
        self._ended = True
        try:
            self._metrics.close()
        finally:
            self.client.set_terminated(self.run_id, status=how.value)


class MetricSender:
    """Buffers metric points and sends them in batches from a background thread.

    ``send`` is called with the points in the order they were added, one call
    at a time. A failed send is not retried here: its error is raised in the
    caller's thread at the next ``add``, ``flush`` or ``close``, as it would
    have been had the caller sent the points itself, so a tracking server that
    is gone still fails the job instead of silently losing its metrics.
    """

    def __init__(self, send: Callable[[list[Metric]], object]) -> None:
        self._send = send
        self._lock = threading.Lock()  # guards _pending, _error and _closed
        self._wake = threading.Condition(self._lock)
        # Held for the whole of a send, so that flush() also waits for a batch
        # the thread has already taken out of _pending but not yet stored.
        self._sending = threading.Lock()
        self._pending: list[Metric] = []
        self._error: Exception | None = None
        self._closed = False
        # A daemon: a trainer killed without close() must not hang on its tracking thread.
        self._thread = threading.Thread(target=self._run, name="mlflow-metrics", daemon=True)
        self._thread.start()

    def add(self, points: list[Metric]) -> None:
        with self._wake:
            self._raise_error()
            self._pending.extend(points)
            if len(self._pending) >= FLUSH_POINTS:
                self._wake.notify()

    def flush(self) -> None:
        self._send_pending()
        with self._lock:
            self._raise_error()

    def close(self) -> None:
        """Send what is left and stop the thread; a second call does nothing more."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join()
        self.flush()

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._closed and len(self._pending) < FLUSH_POINTS:
                    self._wake.wait(FLUSH_SECONDS)
                closed = self._closed
            if closed:
                return  # close() sends the rest from the caller's thread, where an error can be raised
            try:
                self._send_pending()
            except Exception as exc:  # noqa: BLE001 - any failure is handed to the caller's thread
                with self._lock:
                    self._error = exc

    def _send_pending(self) -> None:
        with self._sending:
            with self._lock:
                pending, self._pending = self._pending, []
            if pending:
                self._send(pending)

    def _raise_error(self) -> None:
        # Raised once: the points of the failed batch are lost, later ones still go.
        error, self._error = self._error, None
        if error is not None:
            raise error


def run_end_unless_ended(run_id: str, how: RunEnd) -> None:
    """End a run some other process started and may not have ended (it was killed mid-run)."""
    client = MlflowClient()
    if client.get_run(run_id).info.status == RunStatus.to_string(RunStatus.RUNNING):
        client.set_terminated(run_id, status=how.value)


# MLflow's client sends this variable's value as a bearer token. A worker's
# trainer gets the attempt's token in its environment; the worker process,
# which runs several attempts on threads, sets it around each of its own calls.
TOKEN_VARIABLE = "MLFLOW_TRACKING_TOKEN"
_credential_lock = threading.Lock()


@contextmanager
def credential(token: str) -> Iterator[None]:
    """MLflow calls inside the block carry ``token`` (one block at a time in this process)."""
    with _credential_lock:
        previous = os.environ.get(TOKEN_VARIABLE)
        os.environ[TOKEN_VARIABLE] = token
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(TOKEN_VARIABLE, None)
            else:
                os.environ[TOKEN_VARIABLE] = previous


def file_attach(run_id: str, local_file: Path, folder: str) -> str:
    """Add one file to a run (even a finished one); returns its ``runs:/`` URI."""
    MlflowClient().log_artifact(run_id, str(local_file), artifact_path=folder)
    return f"runs:/{run_id}/{folder}/{local_file.name}"


def _experiment_id(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name)
        except MlflowException as exc:
            # Another worker created it between our lookup and our create.
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        # Restoring it silently would undo someone's deliberate delete.
        raise MlflowException(
            f"MLflow experiment {name!r} is deleted; restore it or use another name",
            INVALID_STATE,
        )
    return experiment.experiment_id
