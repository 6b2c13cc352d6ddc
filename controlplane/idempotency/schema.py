"""The OpenAPI schema documents the Idempotency-Key header on every operation the middleware honours it on."""

from __future__ import annotations

from typing import Any

from controlplane.idempotency.middleware import API_PREFIX, STATE_CHANGING
from controlplane.idempotency.services import MAX_KEY_LENGTH

HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
    "description": (
        "A value unique to the operation (a UUID). Retried with the same key and body, the request is "
        "not run again: the first answer is returned, with `Idempotent-Replayed: true`. The same key "
        "with another body is a 422; while the first request with the key is still running, a retry "
        "waits a few seconds for its answer, else gets a 409. Answers of 500 and above, and those "
        "that show an API token's secret, are not kept. Keys are the caller's own and are kept 24 hours."
    ),
}


# What the key's misuse answers, on every operation that takes one (the header's description says when).
_REFUSAL = {
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
REFUSALS = {
    "409": {**_REFUSAL, "description": "The first request with this Idempotency-Key is still running."},
    "422": {**_REFUSAL, "description": "This Idempotency-Key was first used with another request."},
}


def idempotency_key_document(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook."""
    for path, operations in result.get("paths", {}).items():
        if not path.startswith(API_PREFIX):
            continue
        for method, operation in operations.items():
            if method.upper() in STATE_CHANGING:
                operation.setdefault("parameters", []).append(HEADER)
                responses = operation.setdefault("responses", {})
                for status, refusal in REFUSALS.items():
                    responses.setdefault(status, refusal)
    return result
