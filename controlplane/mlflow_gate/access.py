"""Who may make which MLflow call: the gate's rules, in one table.

MLflow's server checks nothing, so the gate decides every call before it is
forwarded. What is not named here is refused: a call MLflow adds in a later
release stays closed until someone reads it and opens it.

* People see the experiments, runs, artifacts and registered models of the
  projects they are members of (any role) and, as members or above, may change
  a run's tags and name (the MLflow UI does that). Nobody changes the model
  registry through the gate: only the control plane sets or deletes an alias,
  when a promotion is approved.
* A worker's attempt reads its own project (its dataset, its base model) and
  writes only the runs it created: the gate records each ``runs/create`` it
  forwards for an attempt (see ``RunOwner``).

A project is known from names: its experiments are ``tuneyard/<slug>`` and
``tuneyard/<slug>/<part>``, its registered models ``<slug>.<name>``. Anything
of another project, or of none, is answered exactly as a missing thing is, so
the gate is no oracle of what exists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from controlplane.accounts.models import Role

# The MLflow REST API answers under these; the UI's calls use the ajax- twins.
API_PREFIXES = ("api/2.0/mlflow/", "ajax-api/2.0/mlflow/", "api/3.0/mlflow/", "ajax-api/3.0/mlflow/")
ARTIFACT_PREFIXES = ("api/2.0/mlflow-artifacts/", "ajax-api/2.0/mlflow-artifacts/")
# The MLflow UI's page and its static files: nothing of a project's in them.
UI_PATHS = frozenset({"", "health", "version", "server-info", "favicon.ico"})

EXPERIMENT_PREFIX = "tuneyard/"


def experiment_project(name: str | None) -> str | None:
    """The project slug an experiment belongs to, from its name; None for an experiment of no project."""
    if not name or not name.startswith(EXPERIMENT_PREFIX):
        return None
    slug = name.removeprefix(EXPERIMENT_PREFIX).split("/", 1)[0]
    return slug or None


def model_project(name: str | None) -> str | None:
    """The project slug of a registered model ``<slug>.<name>``."""
    if not name or "." not in name:
        return None
    return name.split(".", 1)[0] or None


class Lookups(Protocol):
    """What the gate asks MLflow itself (directly, as the control plane) to place a call."""

    def experiment_name(self, experiment_id: str) -> str | None: ...

    def run_experiment(self, run_id: str) -> str | None: ...

    def run_owned(self, run_id: str, *, job_id: int, attempt: int) -> bool: ...


@dataclass(frozen=True)
class Attempt:
    """A worker's claimed attempt, as its tracking token names it."""

    job_id: int
    attempt: int
    project: str


@dataclass(frozen=True)
class Caller:
    """A signed-in person (their role by project slug) or a worker's attempt."""

    roles: Mapping[str, Role] = field(default_factory=dict)
    attempt: Attempt | None = None
    # False for an API token that may only read (its scopes): every change is refused.
    may_write: bool = True

    @classmethod
    def for_attempt(cls, attempt: Attempt) -> Caller:
        return cls(roles={attempt.project: Role.VIEWER}, attempt=attempt)

    def reads(self, project: str | None) -> bool:
        return project is not None and project in self.roles

    def changes(self, project: str | None) -> bool:
        role = self.roles.get(project or "")
        return self.may_write and self.attempt is None and role is not None and role.includes(Role.MEMBER)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    status: int = 200
    error_code: str = ""
    message: str = ""
    # For a listing: which items of the answer the caller may see (given the item, True to keep).
    keep: tuple[str, Callable[[Mapping[str, Any]], bool]] | None = None
    # The answer creates a run that the caller's attempt then owns.
    records_run: bool = False


ALLOW = Decision(allowed=True)
# "Not there" and "not yours" read the same: MLflow's own code for a missing resource.
HIDDEN = Decision(False, 404, "RESOURCE_DOES_NOT_EXIST", "Not found.")
REGISTRY_CLOSED = Decision(
    False,
    403,
    "PERMISSION_DENIED",
    "Only Tuneyard changes the model registry: register a version and approve its promotion there.",
)
CLOSED = Decision(False, 403, "PERMISSION_DENIED", "This MLflow call is not open through Tuneyard.")


def _refused_change(caller: Caller) -> Decision:
    if not caller.may_write:
        return Decision(False, 403, "PERMISSION_DENIED", "This token may only read (its scope is read).")
    return Decision(False, 403, "PERMISSION_DENIED", "This needs the member role in the run's project.")


# --- the table ---------------------------------------------------------------

# Reads of one run, named by run_id (or run_uuid, as older calls spell it).
RUN_READS = frozenset(
    {"runs/get", "metrics/get-history", "artifacts/list", "get-artifact", "metrics/get-history-bulk"}
)
# Reads of several runs at once (run_ids).
RUNS_READS = frozenset({"metrics/get-history-bulk-interval"})
# Searches within experiments named by experiment_ids: every one must be readable.
EXPERIMENTS_READS = frozenset({"runs/search", "experiments/search-datasets", "logged-models/search"})
# Writes into a run: a worker's attempt writes the runs it created.
RUN_WRITES = frozenset(
    {
        "runs/update",
        "runs/log-batch",
        "runs/log-metric",
        "runs/log-parameter",
        "runs/set-tag",
        "runs/delete-tag",
        "runs/log-inputs",
        "runs/log-outputs",
        "runs/log-model",
    }
)
# Of those, what a person (a member) may do from the MLflow UI: tag and rename a run.
PERSON_RUN_WRITES = frozenset({"runs/set-tag", "runs/delete-tag", "runs/update"})
REGISTRY_READS = frozenset(
    {
        "registered-models/get",
        "registered-models/get-latest-versions",
        "model-versions/get",
        "model-versions/get-download-uri",
        "model-versions/get-artifact",
    }
)
# Listings answered in part: the field holding the items, and how to know an item's project.
LISTINGS: dict[str, tuple[str, Callable[[Mapping[str, Any]], str | None]]] = {
    "experiments/search": ("experiments", lambda item: experiment_project(item.get("name"))),
    "registered-models/search": ("registered_models", lambda item: model_project(item.get("name"))),
    "model-versions/search": ("model_versions", lambda item: model_project(item.get("name"))),
}


class Params:
    """What a call names: the query of a GET, the JSON body of anything else (what MLflow itself reads).

    A name given twice is refused: the gate and MLflow must not read different values.
    """

    def __init__(self, values: Mapping[str, list[Any]]) -> None:
        self.values = values

    def one(self, *names: str) -> str | None:
        """The one value given under any of ``names`` (MLflow's client sends both run_id and run_uuid)."""
        found = [value for name in names for value in self.values.get(name, [])]
        if not found or not all(isinstance(value, str | int) for value in found):
            return None
        distinct = {str(value) for value in found}
        return distinct.pop() if len(distinct) == 1 else None

    def many(self, name: str) -> list[str] | None:
        items: list[Any] = []
        for value in self.values.get(name, []):
            items.extend(value if isinstance(value, list) else [value])
        if not items or not all(isinstance(item, str | int) for item in items):
            return None
        return [str(item) for item in items]


def decide(caller: Caller, method: str, path: str, params: Params, lookups: Lookups) -> Decision:
    """May ``caller`` make the MLflow call ``method path`` (the path under the gate, without a leading /)?"""
    if any(part in (".", "..") for part in path.split("/")) or "//" in path:
        # Decided on one path and sent on another: `static-files/../api/...` would reach the API
        # once an HTTP client (or MLflow) resolves the dots. No MLflow path has them.
        return HIDDEN
    if path in UI_PATHS or path.startswith("static-files/"):
        return ALLOW if method in ("GET", "HEAD") else CLOSED
    if path == "graphql":
        return _graphql(caller, method, params, lookups)
    for prefix in ARTIFACT_PREFIXES:
        if path.startswith(prefix):
            return _artifacts(caller, method, path.removeprefix(prefix), params, lookups)
    endpoint = path
    for prefix in API_PREFIXES:
        if path.startswith(prefix):
            endpoint = path.removeprefix(prefix)
            break
    return _endpoint(caller, method, endpoint, params, lookups)


def _endpoint(caller: Caller, method: str, endpoint: str, params: Params, lookups: Lookups) -> Decision:
    if endpoint in RUN_READS:
        return ALLOW if _run_readable(caller, params.one("run_id", "run_uuid"), lookups) else HIDDEN
    if endpoint in RUNS_READS:
        runs = params.many("run_ids")
        ok = runs is not None and all(_run_readable(caller, run, lookups) for run in runs)
        return ALLOW if ok else HIDDEN
    if endpoint in EXPERIMENTS_READS:
        ids = params.many("experiment_ids")
        ok = ids is not None and all(caller.reads(_project_of(lookups, exp)) for exp in ids)
        return ALLOW if ok else HIDDEN
    if endpoint == "experiments/get":
        return ALLOW if caller.reads(_project_of(lookups, params.one("experiment_id"))) else HIDDEN
    if endpoint == "experiments/get-by-name":
        return ALLOW if caller.reads(experiment_project(params.one("experiment_name"))) else HIDDEN
    if endpoint in LISTINGS:
        items, project_of = LISTINGS[endpoint]
        return Decision(True, keep=(items, lambda item: caller.reads(project_of(item))))
    if endpoint == "experiments/create":
        project = experiment_project(params.one("name"))
        return ALLOW if caller.attempt is not None and project == caller.attempt.project else CLOSED
    if endpoint == "runs/create":
        return _run_create(caller, params.one("experiment_id"), lookups)
    if endpoint in RUN_WRITES:
        return _run_write(caller, endpoint, params.one("run_id", "run_uuid"), lookups)
    if endpoint in REGISTRY_READS or (endpoint == "registered-models/alias" and method == "GET"):
        return ALLOW if caller.reads(model_project(params.one("name"))) else HIDDEN
    if endpoint.startswith(("registered-models/", "model-versions/")):
        return REGISTRY_CLOSED
    return CLOSED


def _project_of(lookups: Lookups, experiment_id: str | None) -> str | None:
    return experiment_project(lookups.experiment_name(experiment_id)) if experiment_id else None


def _run_project(lookups: Lookups, run_id: str | None) -> str | None:
    return _project_of(lookups, lookups.run_experiment(run_id)) if run_id else None


def _run_readable(caller: Caller, run_id: str | None, lookups: Lookups) -> bool:
    return caller.reads(_run_project(lookups, run_id))


def _run_create(caller: Caller, experiment_id: str | None, lookups: Lookups) -> Decision:
    if caller.attempt is None:
        return CLOSED
    if _project_of(lookups, experiment_id) != caller.attempt.project:
        return HIDDEN
    return Decision(True, records_run=True)


def _owned(caller: Caller, run_id: str | None, lookups: Lookups) -> bool:
    attempt = caller.attempt
    return (
        attempt is not None
        and run_id is not None
        and lookups.run_owned(run_id, job_id=attempt.job_id, attempt=attempt.attempt)
    )


def _run_write(caller: Caller, endpoint: str, run_id: str | None, lookups: Lookups) -> Decision:
    if caller.attempt is not None:
        if _owned(caller, run_id, lookups):
            return ALLOW
        # A run of its own project it did not create is as closed as any other.
        return HIDDEN if not _run_readable(caller, run_id, lookups) else _not_this_attempts()
    project = _run_project(lookups, run_id)
    if not caller.reads(project):
        return HIDDEN
    if endpoint not in PERSON_RUN_WRITES:
        return CLOSED
    return ALLOW if caller.changes(project) else _refused_change(caller)


def _not_this_attempts() -> Decision:
    return Decision(False, 403, "PERMISSION_DENIED", "A worker writes only the runs its own attempt created.")


def _artifacts(caller: Caller, method: str, rest: str, params: Params, lookups: Lookups) -> Decision:
    """The artifact store's paths are ``<experiment id>/<run id>/artifacts/...``."""
    if rest == "artifacts" and method == "GET":  # a listing: the folder is the `path` parameter
        where = params.one("path") or ""
    elif rest.startswith("artifacts/"):
        where = rest.removeprefix("artifacts/")
    elif rest.startswith(("mpu/create/", "mpu/complete/", "mpu/abort/")) and method == "POST":
        where = rest.split("/", 2)[2]
        method = "PUT"  # a multipart upload is a write like any other
    else:
        return CLOSED
    parts = where.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return HIDDEN
    project = _project_of(lookups, parts[0])
    if method in ("GET", "HEAD"):
        return ALLOW if caller.reads(project) else HIDDEN
    if method != "PUT":
        return CLOSED
    # A write lands in a run's own folder, of a run this attempt created, in that run's experiment.
    run_id = parts[1] if len(parts) > 2 and parts[2] == "artifacts" else None
    if run_id is None or lookups.run_experiment(run_id) != parts[0]:
        return HIDDEN if not caller.reads(project) else CLOSED
    if _owned(caller, run_id, lookups):
        return ALLOW
    return HIDDEN if not caller.reads(project) else _not_this_attempts()


# --- the UI's GraphQL queries ---------------------------------------------------

# Each query field the UI asks for, and the REST read it stands for: (what names the
# thing in its `input`, and whether that is a run or an experiment). Every field the
# query nests inside one of these belongs to the same run or experiment.
GRAPHQL_READS: dict[str, tuple[str, str]] = {
    "mlflowGetRun": ("runId", "run"),
    "mlflowListArtifacts": ("runId", "run"),
    "mlflowGetMetricHistoryBulkInterval": ("runIds", "run"),
    "mlflowGetExperiment": ("experimentId", "experiment"),
    "mlflowSearchRuns": ("experimentIds", "experiment"),
    "mlflowSearchDatasets": ("experimentIds", "experiment"),
}


def _graphql(caller: Caller, method: str, params: Params, lookups: Lookups) -> Decision:
    """A query document is allowed when every operation in it asks only the reads above, of
    things the caller may read; mutations, fragments at the top and other fields are refused."""
    from graphql import FieldNode, GraphQLError, OperationDefinitionNode, OperationType, parse
    from graphql.utilities import value_from_ast_untyped

    query = params.one("query")
    variables = (params.values.get("variables") or [None])[0] or {}
    if method != "POST" or query is None or not isinstance(variables, dict):
        return CLOSED
    try:
        document = parse(query)
    except GraphQLError:
        return CLOSED
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode) or definition.operation != OperationType.QUERY:
            return CLOSED
        for selection in definition.selection_set.selections:
            if not isinstance(selection, FieldNode):
                return CLOSED
            name = selection.name.value
            if name == "__typename":
                continue
            if name not in GRAPHQL_READS:
                return CLOSED
            key, kind = GRAPHQL_READS[name]
            arguments = {argument.name.value: argument.value for argument in selection.arguments}
            given = value_from_ast_untyped(arguments["input"], variables) if "input" in arguments else None
            named = given.get(key) if isinstance(given, dict) else None
            ids = named if isinstance(named, list) else [named]
            if not ids or not all(isinstance(item, str) and item for item in ids):
                return HIDDEN
            if kind == "run" and not all(_run_readable(caller, run_id, lookups) for run_id in ids):
                return HIDDEN
            if kind == "experiment" and not all(caller.reads(_project_of(lookups, exp)) for exp in ids):
                return HIDDEN
    return ALLOW
