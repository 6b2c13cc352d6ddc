"""How an upload finds the tokenizer that measures its rows: a seam the training app fills.

Datasets sit below training and never read its base models. An upload names
a base model of its project by id; the resolver that training registers in its
``AppConfig.ready()`` turns that id into a ``TokenizerRef`` (its name and the
URI to load from), which the ingest stores and counts with. The control worker
loads it with ``tokenizer_load``, under the same rule as the workers' loads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from controlplane import tracking
from controlplane.accounts.models import Project
from controlplane.errors import NotFound, ValidationFailed
from workers.uris import (
    HubModel,
    LocalModel,
    MlflowModel,
    UriRefused,
    UriRule,
    UriScope,
    local_tree_check,
    model_uri_check,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenizerRef:
    base_model_id: int
    name: str
    uri: str


Resolver = Callable[[Project, int], TokenizerRef | None]
_resolvers: list[Resolver] = []


def resolver_register(resolver: Resolver) -> None:
    if resolver not in _resolvers:
        _resolvers.append(resolver)


def tokenizer_ref(*, project: Project, base_model_id: int) -> TokenizerRef:
    """The tokenizer of ``project``'s base model ``base_model_id``; NotFound when it has none by that id."""
    for resolver in _resolvers:
        ref = resolver(project, base_model_id)
        if ref is not None:
            return ref
    raise NotFound("'tokenizer' names no base model of this project.")


def tokenizer_load(*, project: Project, name: str, uri: str, dst: Path) -> PreTrainedTokenizerBase:
    """The tokenizer of ``project``'s base model ``name``, loaded from ``uri`` if the rule of
    ``workers.uris`` admits it (remote files are fetched under ``dst``).

    Whatever goes wrong (a URI the rule refuses, a missing folder, a folder with
    no tokenizer, a broken file, MLflow not answering), the answer is the same
    ValidationFailed: the errors of a load tell an existing path from a missing
    one, and the person who named the model must not learn this host's files
    from them. The reason is logged for the operators.
    """
    try:
        return _tokenizer_load(project, uri, dst)
    except Exception as exc:  # every failure, so that none reads differently from another
        logger.warning("the tokenizer of base model %r (%r) was not loaded", name, uri, exc_info=True)
        raise ValidationFailed(f"The tokenizer of base model {name!r} could not be loaded.") from exc


def _tokenizer_load(project: Project, uri: str, dst: Path) -> PreTrainedTokenizerBase:
    scope = UriScope.of_project(project.slug, settings.MODEL_URI_ROOTS)
    source = model_uri_check(uri, scope, tracking.run_experiment_name)
    revision = None
    if isinstance(source, HubModel):
        if Path(source.repo_id).exists():
            # from_pretrained would read that folder of this host instead of asking the hub.
            raise UriRefused(UriRule.HUB_ID, uri, "it also names a folder on this machine")
        location, revision = source.repo_id, source.revision
    elif isinstance(source, LocalModel):
        local_tree_check(source.path, scope)
        location = str(source.path)
    elif isinstance(source, MlflowModel) and source.run_id is not None:
        location = str(tracking.tokenizer_download(source.uri, dst=dst))  # its tokenizer files only
    else:
        location = str(tracking.artifact_download(source.uri, dst=dst))
    from transformers import AutoTokenizer  # seconds to import: only in a run that counts tokens

    # Never the repository's own code here, even where a site admin allows it
    # on the workers: the control plane holds every project's credentials.
    return AutoTokenizer.from_pretrained(location, revision=revision, trust_remote_code=False)
