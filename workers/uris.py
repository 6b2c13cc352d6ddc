"""Where a base model may be loaded from: one rule, for the API, the workers and the control worker.

A base model's URI is exactly one of:

* a hub id ``org/name`` in Hugging Face's grammar, optionally ``@revision``;
* ``runs:/<run id>/<path>`` of a run in the project's MLflow experiments
  (``tuneyard/<slug>`` or one below it), or ``models:/<slug>.<name>/<version>``
  or ``models:/<slug>.<name>@<alias>``, a model the project registered;
* a path, or an object-store URI, under a root a site admin configured
  (``MODEL_URI_ROOTS``). A path is resolved first, so neither ``..`` nor a
  symlink leaves its root; a ``file://`` URI is its path.

Anything else raises ``UriRefused``, which names the rule broken. The module
is pure (no Django, no MLflow, no network): the caller passes the lookup of a
run's experiment, and only local paths touch the file system, to resolve them.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import unquote, urlsplit

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

ROOTS_VARIABLE = "MODEL_URI_ROOTS"
MAX_URI_CHARS = 1000
# What a URI is shown as in a refusal: enough to recognize it, never a page of it.
_SHOWN_CHARS = 200

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
# MLflow's own grammar for run ids.
_RUN_URI = re.compile(r"runs:/([A-Za-z0-9][A-Za-z0-9_-]{0,255})/(.+)", re.IGNORECASE)
_MODEL_URI = re.compile(r"models:/([^/@]+)(?:/([1-9][0-9]{0,9})|@([A-Za-z0-9_-]{1,255}))", re.IGNORECASE)
# A project's registered models are "<slug>.<name>" (controlplane/registry), names by controlplane.naming.
_MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")
# A branch, a tag or a commit: git ref characters, in segments.
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}(/[A-Za-z0-9][A-Za-z0-9._-]{0,99}){0,4}")


class UriRule(StrEnum):
    """The rules a model URI can break; each refusal names one."""

    PLAIN_TEXT = "plain-text"
    KNOWN_FORM = "known-form"
    HUB_ID = "hub-id"
    PROJECT_RUN = "project-run"
    PROJECT_MODEL = "project-model"
    UNDER_ROOT = "under-root"


_FORMS = (
    "a hub id org/name, a runs:/ or models:/ URI of this project, "
    f"or a path or storage URI under a root a site admin set in {ROOTS_VARIABLE}"
)


class UriRefused(ValueError):
    """A model URI the rule does not admit; ``str(exc)`` says which rule it broke and how."""

    def __init__(self, rule: UriRule, uri: str, why: str) -> None:
        shown = uri if len(uri) <= _SHOWN_CHARS else f"{uri[:_SHOWN_CHARS]}..."
        super().__init__(f"The model URI {shown!r} breaks the rule '{rule}': {why}.")
        self.rule = rule


@dataclass(frozen=True)
class UriScope:
    """Whose URIs are checked: a project's (its slug, its MLflow experiment), and the roots allowed here."""

    project: str
    # Runs of this experiment, or of one below it ("<experiment>/..."), are the project's.
    experiment: str
    roots: tuple[str, ...] = ()

    @classmethod
    def of_project(cls, slug: str, roots: Iterable[str]) -> UriScope:
        """The scope of project ``slug`` as the control plane names its experiments."""
        return cls(project=slug, experiment=project_experiment(slug), roots=tuple(roots))

    @classmethod
    def from_env(cls, *, project: str, experiment: str) -> UriScope:
        """A job's scope on a worker: the roots are this machine's, from ``MODEL_URI_ROOTS``."""
        return cls(
            project=project, experiment=experiment, roots=roots_parse(os.environ.get(ROOTS_VARIABLE, ""))
        )


def project_experiment(slug: str) -> str:
    return f"tuneyard/{slug}"


# --- what a URI that passes is ------------------------------------------------------


@dataclass(frozen=True)
class HubModel:
    """A model hub repository; ``from_pretrained`` fetches it."""

    repo_id: str
    revision: str | None = None


@dataclass(frozen=True)
class MlflowModel:
    """A ``runs:/`` or ``models:/`` URI of the project, in its canonical spelling."""

    uri: str
    run_id: str | None = None  # for runs:/
    path: str = ""  # for runs:/: the artifact path in the run


@dataclass(frozen=True)
class LocalModel:
    """A path under a local root, resolved (no ``..``, no symlink left in it)."""

    path: Path


@dataclass(frozen=True)
class StoreModel:
    """A URI under an object-store root (``s3://bucket/models/...``), as given."""

    uri: str


ModelSource = HubModel | MlflowModel | LocalModel | StoreModel
# The name of the experiment a run is in; None when there is no such run.
RunExperiment = Callable[[str], str | None]


def model_uri_check(uri: str, scope: UriScope, run_experiment: RunExperiment) -> ModelSource:
    """What ``uri`` names, if the rule admits it for ``scope``; else ``UriRefused``.

    ``run_experiment`` is called only for a ``runs:/`` URI. A run that does
    not exist and a run of another project are refused alike, so the answer
    tells nothing of other projects' runs.
    """
    if not uri or not all(char.isprintable() and not char.isspace() for char in uri):
        raise UriRefused(UriRule.PLAIN_TEXT, uri, "it is empty or holds whitespace or a control character")
    if len(uri) > MAX_URI_CHARS:
        raise UriRefused(UriRule.KNOWN_FORM, uri, f"it is longer than {MAX_URI_CHARS} characters")
    if uri.startswith("/"):
        return LocalModel(_under_local_root(uri, uri, scope))
    scheme = _SCHEME.match(uri)
    if scheme is None:
        return _hub_id(uri)
    match scheme.group(1).lower():
        case "runs":
            return _project_run(uri, scope, run_experiment)
        case "models":
            return _project_model(uri, scope)
        case "file":
            return LocalModel(_under_local_root(_file_uri_path(uri), uri, scope))
        case _:
            return StoreModel(_under_store_root(uri, scope))


def local_tree_check(path: Path, scope: UriScope) -> None:
    """Refuse a model folder holding a symlink that leads out of every root.

    Checked on the machine that reads the files (the API saw the path, not this
    machine's folder): ``from_pretrained`` follows links inside a model folder.
    """
    roots = _local_roots(scope.roots)
    seen: set[Path] = set()
    # Through linked folders too (they may hold links of their own), each real folder once.
    for folder, folders, files in os.walk(path, followlinks=True):
        real = Path(folder).resolve()
        if real in seen:
            folders.clear()
            continue
        seen.add(real)
        for name in (*folders, *files):
            inner = Path(folder) / name
            if inner.is_symlink() and not _within(_resolved(inner, str(path)), roots):
                raise UriRefused(
                    UriRule.UNDER_ROOT, str(path), f"{name!r} in it links to a file outside {ROOTS_VARIABLE}"
                )


def roots_parse(value: str | Sequence[str]) -> tuple[str, ...]:
    """``MODEL_URI_ROOTS`` as a tuple: comma-separated (or a list), each an absolute path or a URI."""
    items = value.split(",") if isinstance(value, str) else list(value)
    roots = tuple(item.strip() for item in items if item.strip())
    for root in roots:
        _root_parse(root)  # a root that is neither fails here, where it is set, not at a user's request
    return roots


# --- the forms ----------------------------------------------------------------------


def _hub_id(uri: str) -> HubModel:
    repo_id, at, revision = uri.partition("@")
    why = (
        "a hub id is org/name in Hugging Face's grammar (ASCII letters, digits, '-', '_' and '.', "
        "no '--' or '..'), optionally @revision; a path must be absolute"
    )
    if repo_id.count("/") != 1 or not repo_id.isascii():
        raise UriRefused(UriRule.HUB_ID, uri, why)
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise UriRefused(UriRule.HUB_ID, uri, why) from exc
    org = repo_id.split("/")[0]
    if _is_ip_address(org):
        raise UriRefused(UriRule.HUB_ID, uri, f"the org {org!r} reads as an IP address")
    if at and (not _REVISION.fullmatch(revision) or ".." in revision):
        raise UriRefused(
            UriRule.HUB_ID, uri, "a revision is a branch, a tag or a commit id (git ref characters)"
        )
    return HubModel(repo_id=repo_id, revision=revision if at else None)


def _is_ip_address(text: str) -> bool:
    # inet_aton takes every form a URL parser might: "127.1", "0x7f.1", "2130706433", "017700000001".
    try:
        socket.inet_aton(text)
    except OSError:
        return False
    return True


def _project_run(uri: str, scope: UriScope, run_experiment: RunExperiment) -> MlflowModel:
    match = _RUN_URI.fullmatch(uri)
    if match is None or not _clean_relative(match.group(2)):
        raise UriRefused(
            UriRule.PROJECT_RUN,
            uri,
            "a runs:/ URI is runs:/<run id>/<path>, with no '.', '..' or empty segment",
        )
    run_id, path = match.groups()
    experiment = run_experiment(run_id)
    if experiment is None or not (
        experiment == scope.experiment or experiment.startswith(f"{scope.experiment}/")
    ):
        raise UriRefused(UriRule.PROJECT_RUN, uri, f"it names no run of project {scope.project}")
    return MlflowModel(uri=f"runs:/{run_id}/{path}", run_id=run_id, path=path)


def _project_model(uri: str, scope: UriScope) -> MlflowModel:
    match = _MODEL_URI.fullmatch(uri)
    if match is None:
        raise UriRefused(
            UriRule.PROJECT_MODEL,
            uri,
            "a models:/ URI is models:/<project>.<name>/<version> or .../<name>@<alias>",
        )
    name, version, alias = match.groups()
    project, dot, model = name.partition(".")
    if project != scope.project or not dot or not _MODEL_NAME.fullmatch(model):
        raise UriRefused(
            UriRule.PROJECT_MODEL, uri, f"it names no registered model of project {scope.project}"
        )
    return MlflowModel(uri=f"models:/{name}/{version}" if version else f"models:/{name}@{alias}")


def _file_uri_path(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment or "?" in uri or "#" in uri:
        raise UriRefused(UriRule.UNDER_ROOT, uri, "a file:// URI is file:///<absolute path> on this machine")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise UriRefused(UriRule.UNDER_ROOT, uri, "a file:// URI is file:///<absolute path> on this machine")
    if not all(char.isprintable() and not char.isspace() for char in path):
        raise UriRefused(UriRule.PLAIN_TEXT, uri, "its path holds whitespace or a control character")
    return path


def _under_local_root(path: str, uri: str, scope: UriScope) -> Path:
    resolved = _resolved(Path(path), uri)
    if not _within(resolved, _local_roots(scope.roots)):
        raise UriRefused(
            UriRule.UNDER_ROOT, uri, f"the path lies under no root a site admin set in {ROOTS_VARIABLE}"
        )
    return resolved


def _resolved(path: Path, uri: str) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long
        raise UriRefused(UriRule.UNDER_ROOT, uri, "the path cannot be resolved") from exc


def _within(path: Path, roots: Iterable[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def _under_store_root(uri: str, scope: UriScope) -> str:
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    stores = [root for root in (_root_parse(r) for r in scope.roots) if isinstance(root, _StoreRoot)]
    if not any(root.scheme == scheme for root in stores):
        raise UriRefused(
            UriRule.KNOWN_FORM, uri, f"'{scheme}:' URIs are not loaded from; a base model is {_FORMS}"
        )
    # Nothing that a reader could decode into another path: no %-escapes, no '..', no query.
    clean = (
        "@" not in parts.netloc
        and not parts.query
        and not parts.fragment
        and not any(char in uri for char in "%?#\\")
    )
    for root in stores:
        if not clean or root.scheme != scheme or parts.netloc.lower() != root.netloc:
            continue
        if parts.path == root.path or (
            parts.path.startswith(f"{root.path}/") and _clean_relative(parts.path[len(root.path) + 1 :])
        ):
            return uri
    raise UriRefused(UriRule.UNDER_ROOT, uri, f"it lies under no root a site admin set in {ROOTS_VARIABLE}")


def _clean_relative(path: str) -> bool:
    """A relative path of plain segments: none empty, '.' or '..', and no backslash, escape or query."""
    if any(char in path for char in "\\%?#"):
        return False
    return all(segment not in ("", ".", "..") for segment in path.split("/"))


# --- roots ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _StoreRoot:
    scheme: str
    netloc: str
    path: str  # without its trailing "/"


def _root_parse(root: str) -> Path | _StoreRoot:
    """A local root (resolved) or an object-store root; ValueError for anything else."""
    if root.startswith("/"):
        return Path(root).resolve()
    parts = urlsplit(root)
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path.startswith("/"):
        return Path(unquote(parts.path)).resolve()
    if (
        _SCHEME.match(root)
        and parts.scheme not in ("file", "runs", "models")
        and (parts.netloc or parts.path.strip("/"))
        and not (parts.query or parts.fragment or "@" in parts.netloc or ".." in parts.path)
    ):
        return _StoreRoot(parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"))
    raise ValueError(
        f"{ROOTS_VARIABLE}: {root!r} is neither an absolute path nor a storage URI such as s3://bucket/models"
    )


def _local_roots(roots: Iterable[str]) -> list[Path]:
    return [root for root in (_root_parse(r) for r in roots) if isinstance(root, Path)]
