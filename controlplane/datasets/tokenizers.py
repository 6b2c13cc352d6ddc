"""How an upload finds the tokenizer that measures its rows: a seam the training app fills.

Datasets sit below training and never read its base models. An upload names
a base model of its project by id; the resolver that training registers in its
``AppConfig.ready()`` turns that id into a ``TokenizerRef`` (its name and the
URI to load from), which the ingest stores and counts with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from controlplane.accounts.models import Project
from controlplane.errors import NotFound


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
