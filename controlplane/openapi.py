"""How the OpenAPI schema describes Tuneyard's own authenticators (drf-spectacular extensions).

Loaded by controlplane.urls, before any schema is generated.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "controlplane.accounts.authentication.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'An API token, sent as "Token <secret>" (POST /api/v1/auth/token makes one).',
        }


class WorkerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "controlplane.api_common.WorkerTokenAuthentication"
    name = "workerToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "The workers' shared WORKER_TOKEN."}


def public_endpoints(endpoints: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The published schema is the people's API: the workers' /internal/ one is not part of it."""
    return [endpoint for endpoint in endpoints if not endpoint[0].startswith("/internal/")]
