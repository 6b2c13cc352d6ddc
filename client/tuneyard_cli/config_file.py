"""Config files (YAML or JSON), which may come from anyone: read bounded, as plain data only.

A YAML file may hold what JSON can: mappings, lists, strings, numbers, booleans
and nulls (a date stays the text it is). Anchors and aliases are refused, since
a "billion laughs" file of a few lines expands into billions of nodes; so is
every tag, since ``!!python/object`` and its kin ask a loader to build objects.
The file's size and its nesting are bounded too, so no file can exhaust the
memory or the stack. Every problem is a ConfigFileRefused, a ValueError whose
message is one sentence.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

MAX_BYTES = 1024 * 1024  # a config file is a few hundred bytes; this is far past any real one
MAX_DEPTH = 64  # as deep as the control plane lets a JSON body nest (API_JSON_MAX_DEPTH by default)


class ConfigFileRefused(ValueError):
    """The config file cannot be used; the message says why, in one sentence."""


class _NotPlainData(yaml.MarkedYAMLError):
    pass


_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _PlainDataLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing anchors, aliases and tags, and nesting past MAX_DEPTH."""

    # Dates and times stay text: a datetime is not JSON, and the server takes none.
    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        # Composing recurses once per level: the depth is counted here, before the recursion.
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
            raise _NotPlainData(
                problem="anchors and aliases (&, *) are not allowed", problem_mark=event.start_mark
            )
        tag = getattr(event, "tag", None)
        if tag is not None:
            raise _NotPlainData(problem=f"tags ({tag}) are not allowed", problem_mark=event.start_mark)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _NotPlainData(
                    problem=f"it nests deeper than {MAX_DEPTH} levels", problem_mark=event.start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _yaml_parse(path: str, text: str) -> Any:
    try:
        loader = _PlainDataLoader(text)  # refuses unprintable characters already
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = ", ".join(part for part in (exc.context, exc.problem) if part).rstrip(".")
        raise ConfigFileRefused(f"{path} is not a plain YAML config: {problem}{where}.") from None
    except yaml.YAMLError as exc:
        first_line = str(exc).splitlines()[0].rstrip(".:")
        raise ConfigFileRefused(f"{path} is not a plain YAML config: {first_line}.") from None


def config_file_read(path: str) -> Any:
    """The data of a YAML (``.yaml``, ``.yml``) or JSON config file; an empty YAML file is ``{}``."""
    with open(path, "rb") as handle:
        raw = handle.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise ConfigFileRefused(
            f"{path} is larger than {MAX_BYTES // 1024} KiB, too large for a config file."
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigFileRefused(f"{path} is not UTF-8 text.") from None
    if path.endswith((".yaml", ".yml")):
        return _yaml_parse(path, text) or {}
    try:
        return json.loads(text)
    except RecursionError:
        raise ConfigFileRefused(f"{path} nests too deeply to be a config file.") from None
    except ValueError as exc:
        raise ConfigFileRefused(f"{path} is not valid JSON: {exc}.") from None
