"""The MLflow gate: ``/mlflow/<path>`` forwards to the MLflow server once ``access.decide`` allows it.

The MLflow server listens where only the control plane reaches it (loopback,
or a network of its own in docker-compose.yml). People reach its UI and API
here, signed in as they are in Tuneyard (a session, or an API token); workers
with the token their claim gave them. The control plane itself talks to MLflow
directly (controlplane.tracking): it is the one client trusted with the
registry's aliases.

Bodies are streamed both ways (artifacts can be gigabytes); a JSON call is read
whole, checked, and forwarded as the gate read it, so MLflow acts on exactly
what was checked.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from django.conf import settings
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import csrf_exempt
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from controlplane.accounts.authentication import ApiTokenAuthentication
from controlplane.accounts.models import ApiToken, Membership, Role, TokenScope, User
from controlplane.mlflow_gate.access import ARTIFACT_PREFIXES, Attempt, Caller, Decision, Params, decide
from controlplane.mlflow_gate.models import RunOwner
from controlplane.training.credentials import tracking_token_read
from controlplane.training.models import Job, JobStatus

log = logging.getLogger(__name__)

# Sent on to MLflow, and back to the caller; nothing else (no cookies, no credentials).
REQUEST_HEADERS = ("content-type", "accept", "range")
RESPONSE_HEADERS = (
    "content-type",
    "content-length",
    "content-disposition",
    "cache-control",
    "etag",
    "last-modified",
    "accept-ranges",
    "content-range",
)
CHUNK = 1024 * 1024
# The MLflow UI's own policy (the site's is stricter than its bundle allows): its scripts and
# styles from here only, but it evaluates code and adds styles as it draws.
MLFLOW_UI_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-eval'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "frame-ancestors 'none'",
    ]
)

_http_lock = threading.Lock()
_http: httpx.Client | None = None


def _mlflow() -> httpx.Client:
    """One pooled connection set to the MLflow server, shared by the web process's threads."""
    global _http
    with _http_lock:
        if _http is None or str(_http.base_url).rstrip("/") != settings.MLFLOW_TRACKING_URI.rstrip("/"):
            _http = httpx.Client(
                base_url=settings.MLFLOW_TRACKING_URI.rstrip("/") + "/",
                timeout=httpx.Timeout(600.0, connect=5.0),
            )
        return _http


class MlflowLookups:
    """``access.Lookups`` against the MLflow server, remembering what cannot change.

    An experiment's id keeps its name (the gate refuses renames) and a run its
    experiment, so both are kept for the life of the process; what is missing
    is asked again next time (it may have been created since).
    """

    _experiment_names: dict[str, str] = {}
    _run_experiments: dict[str, str] = {}
    LIMIT = 100_000

    def _get(self, endpoint: str, **params: str) -> dict[str, Any] | None:
        response = _mlflow().get(f"api/2.0/mlflow/{endpoint}", params=params)
        if response.status_code != 200:
            return None
        return response.json()

    def experiment_name(self, experiment_id: str) -> str | None:
        if experiment_id not in self._experiment_names:
            found = self._get("experiments/get", experiment_id=experiment_id)
            if found is None:
                return None
            self._remember(self._experiment_names, experiment_id, found["experiment"]["name"])
        return self._experiment_names[experiment_id]

    def run_experiment(self, run_id: str) -> str | None:
        if run_id not in self._run_experiments:
            found = self._get("runs/get", run_id=run_id)
            if found is None:
                return None
            self._remember(self._run_experiments, run_id, found["run"]["info"]["experiment_id"])
        return self._run_experiments[run_id]

    def run_owned(self, run_id: str, *, job_id: int, attempt: int) -> bool:
        return RunOwner.objects.filter(run_id=run_id, job_id=job_id, attempt=attempt).exists()

    def _remember(self, cache: dict[str, str], key: str, value: str) -> None:
        if len(cache) >= self.LIMIT:
            cache.clear()
        cache[key] = value


def _error(status: int, code: str, message: str) -> JsonResponse:
    """An answer shaped as MLflow's own errors, so its client and UI show the message."""
    return JsonResponse({"error_code": code, "message": message}, status=status)


def _refusal(decision: Decision) -> JsonResponse:
    return _error(decision.status, decision.error_code, decision.message)


def _unauthenticated(message: str) -> JsonResponse:
    response = _error(401, "UNAUTHENTICATED", message)
    response["WWW-Authenticate"] = 'Bearer realm="tuneyard-mlflow"'
    return response


def _attempt_caller(token: str) -> Caller | None:
    named = tracking_token_read(token)
    if named is None:
        return None
    job_id, attempt = named
    running = (
        Job.objects.filter(pk=job_id, attempt=attempt, status__in=[JobStatus.RUNNING, JobStatus.CANCELLING])
        .values_list("project__slug", flat=True)
        .first()
    )
    if running is None:
        return None
    return Caller.for_attempt(Attempt(job_id=job_id, attempt=attempt, project=running))


def _person_caller(user: User, *, may_write: bool) -> Caller:
    roles = Membership.objects.filter(user=user).values_list("project__slug", "role")
    return Caller(roles={slug: Role(role) for slug, role in roles}, may_write=may_write)


def _token_user(request: HttpRequest) -> tuple[User, ApiToken] | None:
    """The person an API token (``Authorization: Token ...``) names, as the REST API reads it."""
    return ApiTokenAuthentication().authenticate(Request(request))


def _same_origin(request: HttpRequest) -> bool:
    """A browser's change must come from our own pages (the MLflow UI served here), not another site's."""
    origin = request.headers.get("Origin") or request.headers.get("Referer") or ""
    return url_has_allowed_host_and_scheme(
        origin, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ) and bool(origin)


def _caller(request: HttpRequest) -> Caller | JsonResponse:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and tracking_token_read(token.strip()) is not None:
        caller = _attempt_caller(token.strip())
        return caller or _unauthenticated("This worker token holds no running attempt.")
    if scheme.lower() == "bearer":
        # MLflow's own client sends MLFLOW_TRACKING_TOKEN this way: a person's API token, then.
        request.META["HTTP_AUTHORIZATION"] = f"Token {token.strip()}"
    if scheme:
        try:
            found = _token_user(request)
        except AuthenticationFailed as exc:
            return _unauthenticated(str(exc.detail))
        if found is None:
            return _unauthenticated("Sign in to Tuneyard, or send an API token.")
        user, api_token = found
        return _person_caller(user, may_write=api_token.has_scope(TokenScope.WRITE))
    if request.user.is_authenticated:
        if request.method not in ("GET", "HEAD") and not _same_origin(request):
            return _error(403, "PERMISSION_DENIED", "A change must come from Tuneyard's own pages.")
        return _person_caller(request.user, may_write=True)
    return _unauthenticated("Sign in to Tuneyard, or send an API token.")


def _params(request: HttpRequest, path: str) -> Params | None:
    """What the call names (see ``access.Params``); None for a call the gate will not read.

    A change names things in a JSON object and nowhere else (some of MLflow's handlers
    read the query whatever the method, and read any body as JSON): a query on it, or
    another body (but an artifact's bytes), is refused rather than read two ways.
    """
    if request.method in ("GET", "HEAD", "DELETE"):
        return Params({name: request.GET.getlist(name) for name in request.GET})
    if request.GET:
        return None
    if request.content_type != "application/json":
        return Params({}) if path.startswith(ARTIFACT_PREFIXES) else None
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict):
        return None
    return Params({name: [value] for name, value in body.items()})


def _forward(request: HttpRequest, path: str, params: Params) -> httpx.Response:
    headers = {name: request.headers[name] for name in REQUEST_HEADERS if name in request.headers}
    # The query as the gate read it: the same names and values, in the same order.
    query = urlencode([(name, value) for name, values in request.GET.lists() for value in values])
    url = quote(path, safe="/") + (f"?{query}" if query else "")
    content: bytes | Iterator[bytes] | None = None
    if request.method not in ("GET", "HEAD", "DELETE"):
        if request.content_type == "application/json":
            body = {name: values[0] for name, values in params.values.items()}
            content = json.dumps(body).encode()
            headers["content-length"] = str(len(content))
        else:
            content = iter(lambda: request.read(CHUNK), b"")
            if request.headers.get("Content-Length", "").isdigit():
                headers["content-length"] = request.headers["Content-Length"]
    outgoing = _mlflow().build_request(request.method or "GET", url, headers=headers, content=content)
    return _mlflow().send(outgoing, stream=True)


def _answer(upstream: httpx.Response) -> StreamingHttpResponse:
    def body() -> Iterator[bytes]:
        try:
            yield from upstream.iter_raw(CHUNK)
        finally:
            upstream.close()

    response = StreamingHttpResponse(body(), status=upstream.status_code)
    for name in RESPONSE_HEADERS:
        if name in upstream.headers:
            response[name] = upstream.headers[name]
    if "content-encoding" in upstream.headers:
        response["Content-Encoding"] = upstream.headers["content-encoding"]
    response["Content-Security-Policy"] = MLFLOW_UI_CSP
    return response


def _filtered(upstream: httpx.Response, decision: Decision) -> HttpResponse:
    assert decision.keep is not None
    field, keep = decision.keep
    try:
        upstream.read()
        body = upstream.json()
    finally:
        upstream.close()
    if upstream.status_code == 200 and isinstance(body, dict):
        body[field] = [item for item in body.get(field, []) if keep(item)]
    return JsonResponse(body, status=upstream.status_code, safe=False)


def _record_run(upstream: httpx.Response, caller: Caller) -> HttpResponse:
    try:
        upstream.read()
        body = upstream.json()
    finally:
        upstream.close()
    if upstream.status_code == 200 and caller.attempt is not None:
        run_id = body["run"]["info"]["run_id"]
        try:
            attempt = caller.attempt
            RunOwner.objects.create(run_id=run_id, job_id=attempt.job_id, attempt=attempt.attempt)
        except IntegrityError:  # the same run twice: MLflow made a new id, so this cannot be another's
            log.warning("run %s was recorded already", run_id)
    return JsonResponse(body, status=upstream.status_code, safe=False)


@csrf_exempt
def gate(request: HttpRequest, path: str = "") -> HttpResponseBase:
    if request.path == "/mlflow":
        return redirect("/mlflow/")
    caller = _caller(request)
    if isinstance(caller, JsonResponse):
        return caller
    params = _params(request, path)
    if params is None:
        return _error(400, "INVALID_PARAMETER_VALUE", "A change is a JSON object in the body, with no query.")
    decision = decide(caller, request.method or "GET", path, params, MlflowLookups())
    if not decision.allowed:
        return _refusal(decision)
    try:
        upstream = _forward(request, path, params)
    except httpx.HTTPError as exc:
        log.warning("MLflow did not answer the gate: %s", exc)
        return _error(503, "TEMPORARILY_UNAVAILABLE", "MLflow did not answer; try again.")
    if decision.keep is not None:
        return _filtered(upstream, decision)
    if decision.records_run:
        return _record_run(upstream, caller)
    return _answer(upstream)
