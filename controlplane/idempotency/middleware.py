"""``Idempotency-Key`` on the REST API's state-changing requests, with the semantics of the IETF draft.

As Stripe has them: a POST, PUT, PATCH or DELETE under /api/v1/ carrying the header runs once per
caller and key: a retry with the same request gets the first answer again (its
status, headers and body, plus ``Idempotent-Replayed: true``); the same key with
another request is a 422; a retry arriving while the first is still running waits
for it up to IDEMPOTENCY_WAIT_SECONDS, else gets a 409. An answer of 500 or more is
not kept, so a retry runs again. Keys are kept IDEMPOTENCY_RETENTION_SECONDS (24 h).

It is a middleware rather than a DRF hook so that it decides before any view code
runs (a replay runs nothing, and of concurrent requests only one reaches the view),
for every endpoint alike, without a base class every API module would have to use.
DRF has not authenticated anyone yet, so keys are scoped by the credentials the
request carries (``caller_digest``); a replay is handed out only once DRF's own
authenticators accept those credentials as the user who got the first answer.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve
from rest_framework.exceptions import APIException
from rest_framework.request import Request

from controlplane.errors import DomainError
from controlplane.idempotency import selectors, services
from controlplane.idempotency.models import IdempotencyRecord, RecordState

API_PREFIX = "/api/v1/"
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REPLAYED_HEADER = "Idempotent-Replayed"
# The server computes it for the replayed body.
_NOT_KEPT_HEADERS = frozenset({"content-length"})
# Answers that show an API token's secret, once: kept here, it would be readable from the
# database, where only its digest is. A retry of these runs again (and makes another token).
SECRET_URL_NAMES = frozenset({"api-token", "api-tokens"})
_CHUNK = 1024 * 1024


def applies(request: HttpRequest) -> bool:
    return (
        request.method in STATE_CHANGING
        and request.path.startswith(API_PREFIX)
        and "Idempotency-Key" in request.headers
    )


def caller_digest(request: HttpRequest) -> str | None:
    """Whose keys these are: a digest of the Authorization header and of the session's user.

    DRF authenticates from exactly these (an API token, or the user that
    AuthenticationMiddleware found in the session), so one caller's key never reaches
    another's answers. None when the request carries no credentials: the view then
    refuses it, and nothing is kept.
    """
    authorization = request.headers.get("Authorization", "")
    user = getattr(request, "user", None)
    session_user = str(user.pk) if user is not None and user.is_authenticated else ""
    if not authorization and not session_user:
        return None
    return hashlib.sha256(f"{authorization}\n{session_user}".encode()).hexdigest()


def request_digest(request: HttpRequest) -> tuple[str, IO[bytes] | None]:
    """A digest of the method, path, query and body; and the file now holding a body too large for memory.

    A JSON body is digested in a canonical form, so a retry that serializes the same
    object differently (key order, spaces) is the same request.
    """
    digest = hashlib.sha256(f"{request.method} {request.get_full_path()}\n".encode())
    if request.method == "POST" and request.content_type == "multipart/form-data":
        # Parsed already (by UnstorableTextGuard): the fields, then each file's name, size and bytes.
        for name, values in sorted(request.POST.lists()):
            digest.update(json.dumps([name, values]).encode())
        for name, uploads in sorted(request.FILES.lists()):
            for upload in uploads:
                digest.update(json.dumps([name, upload.name, upload.size]).encode())
                for chunk in upload.chunks():
                    digest.update(chunk)
                upload.seek(0)
        return digest.hexdigest(), None
    try:
        body = request.body
    except RequestDataTooBig:
        spool = _body_spool(request, digest)
        return digest.hexdigest(), spool
    if request.content_type == "application/json":
        try:
            body = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
        except (ValueError, RecursionError):
            pass  # not JSON after all: its bytes, and the view's parser says what is wrong
    digest.update(body)
    return digest.hexdigest(), None


def _body_spool(request: HttpRequest, digest: Any) -> IO[bytes]:
    """Digest a body too large for memory (an upload's piece) into a temporary file the view then reads.

    HttpRequest reads its body from ``_stream``, which its subclasses (WSGIRequest)
    set; this puts a copy of the same bytes in its place.
    """
    spool = tempfile.TemporaryFile(dir=settings.FILE_UPLOAD_TEMP_DIR)
    while chunk := request._stream.read(_CHUNK):
        digest.update(chunk)
        spool.write(chunk)
    spool.seek(0)
    request._stream = spool
    return spool


def authenticated_user_id(request: HttpRequest) -> int | None:
    """Who DRF's authenticators of the addressed view take the request for; None if nobody.

    Checked again before a replay: a token revoked or expired since, or a session
    logged out, gets no stored answer.
    """
    try:
        view = resolve(request.path_info).func
    except Resolver404:
        return None
    view_class = getattr(view, "cls", None)  # set by DRF's as_view()
    if view_class is None:
        return None
    session_user = request.user
    try:
        # As the view would: its authenticators, and its parsers (a session's CSRF check reads the body).
        drf_request: Request = view_class(**getattr(view, "initkwargs", {})).initialize_request(request)
        user = drf_request.user
    except APIException:
        return None
    finally:
        request.user = session_user  # DRF sets the request's user as it authenticates: no trace of it here
    return user.pk if user is not None and user.is_authenticated else None


def _kept(request: HttpRequest, response: HttpResponse) -> bool:
    """Whether an answer is replayed to retries: not a 5xx (a retry should run again), not one
    that shows a secret (``SECRET_URL_NAMES``, or marked ``Cache-Control: no-store``), nor a
    refusal of the credentials (DRF set no user: nobody's answer)."""
    user = getattr(request, "user", None)
    match = getattr(request, "resolver_match", None)
    no_store = "no-store" in {d.strip() for d in response.get("Cache-Control", "").lower().split(",")}
    return (
        response.status_code < 500
        and not response.streaming
        and not no_store
        and (match is None or match.url_name not in SECRET_URL_NAMES)
        and user is not None
        and user.is_authenticated
    )


def replay(record: IdempotencyRecord) -> HttpResponse:
    response = HttpResponse(bytes(record.response_body), status=record.response_status)
    for name, value in record.response_headers:
        response[name] = value
    response[REPLAYED_HEADER] = "true"
    return response


def _error(exc: DomainError) -> JsonResponse:
    return JsonResponse({"error": exc.code, "message": exc.message}, status=exc.status)


class IdempotencyKeys:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not applies(request):
            return self.get_response(request)
        try:
            key = services.key_check(request.headers["Idempotency-Key"])
        except DomainError as exc:
            return _error(exc)
        caller = caller_digest(request)
        if caller is None:
            return self.get_response(request)
        digest, spool = request_digest(request)
        try:
            try:
                record = self._claim_or_wait(request, caller=caller, key=key, digest=digest)
            except DomainError as exc:
                return _error(exc)
            if record.state == RecordState.RUNNING:
                return self._run(request, record)
            if authenticated_user_id(request) != record.user_id:
                # The credentials no longer pass (revoked, expired, logged out): the view refuses them.
                return self.get_response(request)
            return replay(record)
        finally:
            if spool is not None:
                spool.close()

    def _claim_or_wait(
        self, request: HttpRequest, *, caller: str, key: str, digest: str
    ) -> IdempotencyRecord:
        """The record this request runs under (RUNNING, claimed by it) or replays (DONE)."""
        claim = {"caller": caller, "key": key, "request_digest": digest}
        where = {"method": request.method or "", "path": request.path}
        record, won = services.record_claim(**claim, **where)
        deadline = time.monotonic() + settings.IDEMPOTENCY_WAIT_SECONDS
        pause = 0.01
        while not won:
            if record.request_digest != digest:
                raise services.IdempotencyKeyReused(
                    f"This Idempotency-Key was first used with another request ({record.method} "
                    f"{record.path} with other parameters); send a new key with a new request."
                )
            if record.state == RecordState.DONE:
                return record
            if time.monotonic() >= deadline:
                raise services.IdempotencyKeyInUse(
                    "The first request with this Idempotency-Key is still being answered; "
                    "retry in a moment to get its answer."
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.2)
            current = selectors.record_find(caller=caller, key=key)
            if current is None:  # the first answered 5xx (or expired): this one may run
                record, won = services.record_claim(**claim, **where)
            else:
                record = current
        return record

    def _run(self, request: HttpRequest, record: IdempotencyRecord) -> HttpResponse:
        stored = False
        try:
            response = self.get_response(request)
            if _kept(request, response):
                headers = [[k, v] for k, v in response.items() if k.lower() not in _NOT_KEPT_HEADERS]
                stored = services.record_finish(
                    record=record,
                    user_id=request.user.pk,
                    status=response.status_code,
                    headers=headers,
                    body=response.content,
                )
        finally:
            if not stored:
                services.record_release(record=record)
        return response
