"""The Tuneyard client: every resource of the REST API, its pages followed, its waits, its retries.

    from tuneyard import Client

    client = Client()  # TUNEYARD_URL and TUNEYARD_TOKEN, or Client(url, token)
    data = client.datasets.upload("train.jsonl", project="demo", name="support")
    job = client.jobs.submit(project="demo", base_model="tiny-llama", dataset_version=data.id,
                             config={"method": {"name": "lora"}})
    job = client.jobs.wait(job.id)            # raises JobFailed unless it succeeded
    version = client.model_versions.register(job=job.id, name="support-lora")

Retries: a request that got no answer, or a 429/502/503/504, is sent again with
backoff. Every POST carries an ``Idempotency-Key`` that its retries repeat, so a
retried submit never launches a second job.
"""

from __future__ import annotations

import builtins
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tuneyard import errors
from tuneyard.models import (
    FINISHED,
    BaseModel,
    DatasetVersion,
    Delivery,
    Deployment,
    Job,
    Model,
    ModelVersion,
    Project,
    Promotion,
    Suite,
    SuiteRun,
    Sweep,
    Webhook,
)

M = TypeVar("M", bound=Model)
Progress = Callable[[dict[str, Any]], None]

RETRY_STATUSES = frozenset({429, 502, 503, 504})
PIECE_BYTES = 32 * 1024 * 1024  # a larger file goes up in resumable pieces of this size
PIECE_HEADERS = {"Content-Type": "application/offset+octet-stream"}
# "name", "name:v3" or "name@3": a dataset version by name, the newest when no version is said.
DATASET_REF = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_\-]*)(?:(?::v|@)(?P<version>\d+))?$")


def _is_id(value: int | str) -> bool:
    return isinstance(value, int) or (value.isascii() and value.isdigit())


class Client:
    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 4,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("TUNEYARD_URL") or "http://127.0.0.1:8000").rstrip("/")
        token = token if token is not None else os.environ.get("TUNEYARD_TOKEN")
        headers = {"Authorization": f"Token {token}"} if token else {}
        self.retries = retries
        self._polled: dict[str, tuple[str, Any]] = {}
        self.http = httpx.Client(
            base_url=self.url + "/api/v1/", headers=headers, timeout=timeout, transport=transport
        )
        self.projects = Projects(self)
        self.base_models = BaseModels(self)
        self.datasets = Datasets(self)
        self.jobs = Jobs(self)
        self.model_versions = ModelVersions(self)
        self.promotions = Promotions(self)
        self.deployments = Deployments(self)
        self.suites = Suites(self)
        self.gates = Gates(self)
        self.sweeps = Sweeps(self)
        self.webhooks = Webhooks(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def token_obtain(self, username: str, password: str, *, name: str = "cli") -> str:
        """A new API token for a username and password (every scope)."""
        body = self.request(
            "POST", "auth/token", data={"username": username, "password": password, "name": name}
        )
        return str(body["token"])

    def request(self, method: str, path: str, *, retry: bool = True, **kwargs: Any) -> Any:
        """One call of the API, its JSON answer; a refusal raises the TuneyardError of its status."""
        headers = dict(kwargs.pop("headers", None) or {})
        if method in ("POST", "PATCH") and "Idempotency-Key" not in headers:
            headers["Idempotency-Key"] = uuid.uuid4().hex
        tries = self.retries + 1 if retry else 1
        for attempt in range(tries):
            last = attempt == tries - 1
            try:
                response = self.http.request(method, path, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                if last:
                    raise errors.Unreachable(f"cannot reach {self.url}: {exc}") from exc
                time.sleep(min(0.5 * 2**attempt, 8.0))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                wait = response.headers.get("Retry-After", "")
                time.sleep(float(wait) if wait.isdigit() else min(0.5 * 2**attempt, 8.0))
                continue
            return self._answer(response)
        raise AssertionError("unreachable")  # the loop returns or raises

    def poll(self, path: str) -> Any:
        """GET ``path`` as a poller does: with the ETag of the last answer, so an unchanged
        resource costs the server a 304 and no body."""
        etag, body = self._polled.get(path, ("", None))
        try:
            response = self.http.get(path, headers={"If-None-Match": etag} if etag else {})
        except httpx.TransportError:
            return self.request("GET", path)  # with its retries
        if response.status_code == 304 and body is not None:
            return body
        body = self._answer(response)
        self._polled[path] = (response.headers.get("ETag", ""), body)
        return body

    @staticmethod
    def _answer(response: httpx.Response) -> Any:
        if response.status_code < 400:
            if not response.content:
                return None
            # A model card as Markdown, review votes as CSV: the text as it came.
            if "json" not in response.headers.get("Content-Type", "application/json"):
                return response.text
            return response.json()
        try:
            body = response.json()
            message, code = body.get("message") or response.text, body.get("error", "")
        except ValueError:
            message, code = response.text[:300] or response.reason_phrase, ""
        kind = errors.BY_STATUS.get(response.status_code, errors.TuneyardError)
        raise kind(message, status=response.status_code, code=code)

    def pages(self, path: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every row of a listing, following its ``next`` links page by page."""
        url: str | None = path
        query = {k: v for k, v in (params or {}).items() if v is not None}
        while url:
            body = self.request("GET", url, params=query)
            yield from body["results"]
            url, query = body.get("next"), {}


class _Resource:
    def __init__(self, client: Client) -> None:
        self.client = client

    def _list(self, cls: type[M], path: str, params: dict[str, Any] | None = None) -> list[M]:
        return [cls.from_api(row) for row in self.client.pages(path, params)]


class Projects(_Resource):
    def list(self) -> list[Project]:
        return self._list(Project, "projects")

    def pause(self, slug: str) -> dict[str, Any]:
        return dict(self.client.request("POST", f"projects/{slug}/pause"))

    def resume(self, slug: str) -> dict[str, Any]:
        return dict(self.client.request("POST", f"projects/{slug}/resume"))


class BaseModels(_Resource):
    def list(self, project: str) -> list[BaseModel]:
        return self._list(BaseModel, "base-models", {"project": project})

    def resolve(self, project: str, ref: int | str) -> int:
        """A base model's id from its id or its name in the project."""
        if _is_id(ref):
            return int(ref)
        for model in self.list(project):
            if model.name == ref:
                return model.id
        names = ", ".join(m.name for m in self.list(project)) or "none"
        raise errors.NotFound(
            f"project {project} has no base model named {ref!r} (it has: {names})", status=404
        )


class Datasets(_Resource):
    def list(self, project: str) -> list[DatasetVersion]:
        return self._list(DatasetVersion, "datasets", {"project": project})

    def get(self, version_id: int) -> DatasetVersion:
        return DatasetVersion.from_api(self.client.request("GET", f"datasets/{version_id}"))

    def resolve(self, project: str, ref: int | str) -> int:
        """A dataset version's id from its id, ``name`` (the newest), ``name:v3`` or ``name@3``."""
        if _is_id(ref):
            return int(ref)
        match = DATASET_REF.match(str(ref))
        if not match:
            raise errors.Invalid(f"{ref!r} is neither an id nor a dataset name (name, name:v3)", status=400)
        versions = [v for v in self.list(project) if v.name == match["name"]]
        if match["version"]:
            versions = [v for v in versions if v.version == int(match["version"])]
        if not versions:
            raise errors.NotFound(f"project {project} has no dataset version {ref!r}", status=404)
        return max(versions, key=lambda v: v.version).id

    def upload(
        self,
        path: str | os.PathLike[str],
        *,
        project: str,
        name: str,
        schema: str | None = None,
        mapping: dict[str, str] | None = None,
        tokenizer: int | str | None = None,
        max_tokens: int | None = None,
        piece_bytes: int = PIECE_BYTES,
        resume: str | None = None,
        progress: Progress | None = None,
    ) -> DatasetVersion:
        """Upload a dataset file and wait for its version. A large file goes up in resumable pieces
        (``resume`` continues an earlier upload by its id); ``progress`` hears each step."""
        import json

        settings: dict[str, Any] = {"name": name}
        if schema:
            settings["schema"] = schema
        if mapping:
            settings["mapping"] = json.dumps(mapping)
        if tokenizer is not None:
            settings["tokenizer"] = self.client.base_models.resolve(project, tokenizer)
        if max_tokens is not None:
            settings["max_tokens"] = max_tokens
        size = os.path.getsize(path)
        if resume or size > piece_bytes:
            body = self._upload_pieces(Path(path), project, settings, piece_bytes, resume, progress)
        else:
            with open(path, "rb") as handle:
                body = self.client.request(
                    "POST",
                    "datasets",
                    data={"project": project, **{k: str(v) for k, v in settings.items()}},
                    files={"file": (Path(path).name, handle)},
                    retry=False,  # a file handle cannot be sent twice; the idempotency key covers a rerun
                )
        if "kind" in body:
            # A large file is checked by the control worker: follow its operation to the version.
            body = self._operation_wait(body, progress)
        return DatasetVersion.from_api(body)

    def _upload_pieces(
        self,
        path: Path,
        project: str,
        settings: dict[str, Any],
        piece_bytes: int,
        upload_id: str | None,
        progress: Progress | None,
    ) -> dict[str, Any]:
        size = path.stat().st_size
        if upload_id is None:
            body = {"project": project, "filename": path.name, "size": size}
            upload_id = self.client.request("POST", "uploads", json=body)["id"]
        state = self.client.request("GET", f"uploads/{upload_id}")
        if state["size"] != size:
            raise errors.Invalid(f"upload {upload_id} is of a {state['size']}-byte file; {path} has {size}")
        offset, failures = state["offset"], 0
        with path.open("rb") as handle:
            while offset < size:
                handle.seek(offset)
                headers = PIECE_HEADERS | {"Upload-Offset": str(offset)}
                try:
                    answer = self.client.request(
                        "PATCH", f"uploads/{upload_id}", content=handle.read(piece_bytes), headers=headers
                    )
                    offset = answer["offset"]
                except (errors.Unreachable, errors.Conflict):
                    # A broken piece, or one the server did not take whole (409): ask where it stands.
                    failures += 1
                    if failures > 5:
                        raise
                    offset = self.client.request("GET", f"uploads/{upload_id}")["offset"]
                    continue
                if progress:
                    progress({"stage": "upload", "upload": upload_id, "done": offset, "total": size})
        return dict(self.client.request("POST", f"uploads/{upload_id}/finish", json=settings))

    def _operation_wait(self, operation: dict[str, Any], progress: Progress | None) -> dict[str, Any]:
        while operation["status"] not in FINISHED:
            if progress:
                progress({"stage": "ingest", "done": operation["progress"], "total": 1.0})
            time.sleep(1.0)
            operation = self.client.request("GET", f"dataset-operations/{operation['id']}")
        if operation["status"] != "succeeded":
            raise errors.Invalid(operation["message"] or "the dataset was refused", status=400)
        return dict(self.client.request("GET", f"datasets/{operation['dataset_version']}"))


class Jobs(_Resource):
    def list(self, project: str | None = None, **filters: Any) -> Iterator[Job]:
        """Every job the token may see (or one project's), newest first; filters as the API takes them
        (status, kind, method, q, ordering ...). Pages are fetched as the iteration goes."""
        for row in self.client.pages("jobs", {"project": project, **filters}):
            yield Job.from_api(row)

    def get(self, job_id: int) -> Job:
        return Job.from_api(self.client.request("GET", f"jobs/{job_id}"))

    def submit(
        self,
        *,
        project: str,
        base_model: int | str,
        dataset_version: int | str,
        config: dict[str, Any] | None = None,
        name: str = "",
        priority: int | None = None,
    ) -> Job:
        """Launch a fine-tune. ``base_model`` and ``dataset_version`` take ids or names."""
        body: dict[str, Any] = {
            "project": project,
            "base_model": self.client.base_models.resolve(project, base_model),
            "dataset_version": self.client.datasets.resolve(project, dataset_version),
            "config": config or {},
            "name": name,
        }
        if priority is not None:
            body["priority"] = priority
        return Job.from_api(self.client.request("POST", "jobs", json=body))

    def evaluate(self, body: dict[str, Any]) -> Job:
        """Launch an evaluate job (``kind: evaluate``; see the API's JobCreate schema)."""
        project = body["project"]
        body = dict(body, kind="evaluate")
        body["dataset_version"] = self.client.datasets.resolve(project, body["dataset_version"])
        if body.get("base_model") is not None:
            body["base_model"] = self.client.base_models.resolve(project, body["base_model"])
        return Job.from_api(self.client.request("POST", "jobs", json=body))

    def estimate(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.client.request("POST", "jobs/estimate", json=body))

    def cancel(self, job_id: int) -> Job:
        return Job.from_api(self.client.request("POST", f"jobs/{job_id}/cancel"))

    def retry(self, job_id: int) -> Job:
        return Job.from_api(self.client.request("POST", f"jobs/{job_id}/retry"))

    def clone(self, job_id: int) -> Job:
        return Job.from_api(self.client.request("POST", f"jobs/{job_id}/clone"))

    def metrics(self, job_id: int) -> dict[str, Any]:
        """Each logged metric's series: ``{"series": {name: {"steps": [...], "values": [...]}}}``."""
        return dict(self.client.request("GET", f"jobs/{job_id}/metrics"))

    def logs(self, job_id: int, *, follow: bool = False, interval: float = 1.0) -> Iterator[str]:
        after = 0
        while True:
            page = self.client.request("GET", f"jobs/{job_id}/logs", params={"after": after})
            yield from page["lines"]
            after = page["next"]
            if not follow or (page["finished"] and not page["lines"]):
                return
            time.sleep(interval)

    def wait(
        self,
        job_id: int,
        *,
        interval: float = 2.0,
        timeout: float | None = None,
        progress: Progress | None = None,
        check: bool = True,
    ) -> Job:
        """Poll until the job ends. With ``check`` (the default) an end other than succeeded raises
        JobFailed carrying the job; ``progress`` hears each poll's job."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.client.poll(f"jobs/{job_id}")
            if progress:
                progress(job)
            if job["status"] in FINISHED:
                result = Job.from_api(job)
                if check and result.status != "succeeded":
                    raise errors.JobFailed(
                        f"job {job_id} {result.status}: {result.error}".strip(), result=result
                    )
                return result
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout} s")
            time.sleep(interval)


class ModelVersions(_Resource):
    def list(self, project: str) -> list[ModelVersion]:
        return self._list(ModelVersion, "model-versions", {"project": project})

    def get(self, model_version_id: int) -> ModelVersion:
        return ModelVersion.from_api(self.client.request("GET", f"model-versions/{model_version_id}"))

    def register(self, *, job: int, name: str) -> ModelVersion:
        body = self.client.request("POST", "model-versions", json={"job": job, "name": name})
        return ModelVersion.from_api(body)


class Promotions(_Resource):
    def list(self, project: str) -> list[Promotion]:
        return self._list(Promotion, "promotions", {"project": project})

    def get(self, promotion_id: int) -> Promotion:
        return Promotion.from_api(self.client.request("GET", f"promotions/{promotion_id}"))

    def request(self, *, model_version: int, target: str = "production", comment: str = "") -> Promotion:
        body = {"model_version": model_version, "target": target, "comment": comment}
        return Promotion.from_api(self.client.request("POST", "promotions", json=body))

    def approve(self, promotion_id: int, *, comment: str = "", override_reason: str = "") -> dict[str, Any]:
        """Approve; where the gate fails, only a project admin can, giving ``override_reason``."""
        body = {"comment": comment, "override_reason": override_reason}
        return dict(self.client.request("POST", f"promotions/{promotion_id}/approve", json=body))

    def reject(self, promotion_id: int, *, comment: str = "") -> dict[str, Any]:
        return dict(
            self.client.request("POST", f"promotions/{promotion_id}/reject", json={"comment": comment})
        )

    def withdraw(self, promotion_id: int) -> Promotion:
        """Take back one's own open request."""
        return Promotion.from_api(self.client.request("POST", f"promotions/{promotion_id}/withdraw"))

    def rollback(
        self,
        *,
        model_version: int,
        target: str = "production",
        comment: str = "",
        emergency: bool = False,
        reason: str = "",
    ) -> Promotion:
        """Ask to put ``target`` back on a version it ran before (another approver decides), or, as a
        project admin with ``emergency`` and a ``reason``, do it at once."""
        body = {"model_version": model_version, "target": target, "comment": comment}
        if emergency:
            body |= {"emergency": True, "reason": reason}
        return Promotion.from_api(self.client.request("POST", "rollbacks", json=body))

    def comment(self, promotion_id: int, body: str) -> dict[str, Any]:
        return dict(self.client.request("POST", f"promotions/{promotion_id}/comments", json={"body": body}))

    def comments(self, promotion_id: int) -> Iterator[dict[str, Any]]:
        return self.client.pages(f"promotions/{promotion_id}/comments")

    def gates(self, promotion_id: int) -> dict[str, Any]:
        """Every gate rule with its figures and pass / fail / pending (kept as decided, once decided)."""
        return dict(self.client.request("GET", f"promotions/{promotion_id}/gates"))

    def review(self, promotion_id: int) -> dict[str, Any]:
        """The blind review: prompts (sides hidden until one votes), one's votes, the tally."""
        return dict(self.client.request("GET", f"promotions/{promotion_id}/review"))

    def vote(self, promotion_id: int, *, task: str, row: int, vote: str) -> dict[str, Any]:
        """Vote ``a``, ``b`` or ``tie`` on one prompt; a vote is final."""
        body = {"task": task, "row": row, "vote": vote}
        return dict(self.client.request("POST", f"promotions/{promotion_id}/review/votes", json=body))

    def votes_csv(self, promotion_id: int) -> str:
        return str(
            self.client.request("GET", f"promotions/{promotion_id}/review/votes", params={"format": "csv"})
        )

    def card(self, promotion_id: int, *, markdown: bool = False) -> Any:
        """The model card written at approval: JSON, or its Markdown."""
        params = {"format": "markdown"} if markdown else None
        return self.client.request("GET", f"promotions/{promotion_id}/card", params=params)


class Deployments(_Resource):
    def list(
        self, target: str = "production", *, project: str | None = None, model: str | None = None
    ) -> list[Deployment]:
        return self._list(Deployment, f"deployments/{target}", {"project": project, "model": model})

    def history(
        self, target: str = "production", *, project: str, model: str
    ) -> builtins.list[dict[str, Any]]:
        """The approved promotions of ``model`` to ``target``, in the order they were decided."""
        body = self.client.request(
            "GET", f"deployments/{target}/history", params={"project": project, "model": model}
        )
        return list(body["results"])

    def card(self, target: str = "production", *, project: str, model: str, markdown: bool = False) -> Any:
        """The model card of what ``target`` runs: JSON, or its Markdown."""
        params = {"project": project, "model": model} | ({"format": "markdown"} if markdown else {})
        return self.client.request("GET", f"deployments/{target}/card", params=params)


class Suites(_Resource):
    def list(self, project: str, *, model: str | None = None) -> list[Suite]:
        return self._list(Suite, "suites", {"project": project, "model": model})

    def get(self, suite_id: int) -> Suite:
        return Suite.from_api(self.client.request("GET", f"suites/{suite_id}"))

    def create(
        self,
        *,
        project: str,
        model_name: str,
        name: str,
        tasks: builtins.list[dict[str, Any]],
        seed: int = 1234,
    ) -> Suite:
        body = {"project": project, "model_name": model_name, "name": name, "tasks": tasks, "seed": seed}
        return Suite.from_api(self.client.request("POST", "suites", json=body))

    def new_version(
        self, suite_id: int, *, tasks: builtins.list[dict[str, Any]], seed: int | None = None
    ) -> Suite:
        body: dict[str, Any] = {"tasks": tasks} | ({"seed": seed} if seed is not None else {})
        return Suite.from_api(self.client.request("POST", f"suites/{suite_id}/versions", json=body))

    def run(self, *, project: str, suite: int, model_version: int) -> SuiteRun:
        """Run a suite on a model version: the cached run if the pair has one (no job starts)."""
        body = {"project": project, "suite": suite, "model_version": model_version}
        return SuiteRun.from_api(self.client.request("POST", "suite-runs", json=body))

    def run_get(self, suite_run_id: int) -> SuiteRun:
        return SuiteRun.from_api(self.client.poll(f"suite-runs/{suite_run_id}"))

    def run_wait(self, suite_run_id: int, *, interval: float = 3.0, timeout: float | None = None) -> SuiteRun:
        """Poll until the run ends, succeeded or failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (run := self.run_get(suite_run_id)).finished:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"suite run {suite_run_id} is still running after {timeout} s")
            time.sleep(interval)
        return run

    def predictions(self, suite_run_id: int, task: str, *, only: str = "all") -> Iterator[dict[str, Any]]:
        """Per row: input, prediction, extracted answer, reference, score (``only``: right, wrong)."""
        return self.client.pages(f"suite-runs/{suite_run_id}/tasks/{task}/predictions", {"filter": only})


class Gates(_Resource):
    def get(self, *, project: str, model: str, target: str = "production") -> dict[str, Any]:
        params = {"project": project, "model": model, "target": target}
        return dict(self.client.request("GET", "gate-policy", params=params))

    def put(
        self, *, project: str, model: str, target: str = "production", rules: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Replace the rules a version of ``model`` must pass to reach ``target`` (approvers)."""
        body = {"project": project, "model": model, "target": target, "rules": rules}
        return dict(self.client.request("PUT", "gate-policy", json=body))


class Sweeps(_Resource):
    def list(self, project: str) -> list[Sweep]:
        return self._list(Sweep, "sweeps", {"project": project})

    def get(self, sweep_id: int) -> Sweep:
        return Sweep.from_api(self.client.request("GET", f"sweeps/{sweep_id}"))

    def create(self, body: dict[str, Any]) -> Sweep:
        return Sweep.from_api(self.client.request("POST", "sweeps", json=body))

    def act(self, sweep_id: int, action: str, body: dict[str, Any] | None = None) -> Sweep:
        """pause, resume, stop, rerun-failed, or add-trials (with ``{"count": n}``)."""
        return Sweep.from_api(self.client.request("POST", f"sweeps/{sweep_id}/{action}", json=body or {}))

    def wait(self, sweep_id: int, *, interval: float = 3.0, progress: Progress | None = None) -> Sweep:
        while True:
            sweep = self.client.poll(f"sweeps/{sweep_id}")
            if progress:
                progress(sweep)
            if sweep["status"] not in ("running", "paused"):
                return Sweep.from_api(sweep)
            time.sleep(interval)


class Webhooks(_Resource):
    def list(self, project: str) -> list[Webhook]:
        return self._list(Webhook, "webhooks", {"project": project})

    def get(self, webhook_id: int) -> Webhook:
        return Webhook.from_api(self.client.request("GET", f"webhooks/{webhook_id}"))

    def create(
        self, *, project: str, url: str, event_types: Sequence[str] = (), description: str = ""
    ) -> Webhook:
        body = {"project": project, "url": url, "event_types": list(event_types), "description": description}
        return Webhook.from_api(self.client.request("POST", "webhooks", json=body))

    def rotate_secret(self, webhook_id: int) -> Webhook:
        return Webhook.from_api(self.client.request("POST", f"webhooks/{webhook_id}/rotate-secret"))

    def deliveries(self, webhook_id: int) -> Iterator[Delivery]:
        for row in self.client.pages(f"webhooks/{webhook_id}/deliveries"):
            yield Delivery.from_api(row)

    def redeliver(self, delivery_id: int) -> Delivery:
        return Delivery.from_api(self.client.request("POST", f"webhook-deliveries/{delivery_id}/redeliver"))
