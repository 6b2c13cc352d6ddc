"""The OpenAPI schema is generated from the very request models the endpoints validate with."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator

from controlplane.training.api import FinetuneRequest
from workers.spec import TrainingConfig


@pytest.fixture(scope="module")
def schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


@pytest.fixture
def whole_schema(monkeypatch) -> Callable[[], dict]:
    """The workers' internal API too, which the published schema leaves out."""
    from drf_spectacular.settings import spectacular_settings

    monkeypatch.setattr(spectacular_settings, "PREPROCESSING_HOOKS", [])
    return lambda: SchemaGenerator().get_schema(request=None, public=True)


def _request_schema(schema: dict, path: str, content: str = "application/json") -> dict:
    return schema["paths"][path]["post"]["requestBody"]["content"][content]["schema"]


@pytest.mark.parametrize(
    "path, component",
    [
        ("/api/v1/jobs", "JobRequest"),
        ("/api/v1/jobs/estimate", "FinetuneRequest"),
        ("/api/v1/base-models", "BaseModelRequest"),
        ("/api/v1/sweeps", "SweepRequest"),
        ("/api/v1/model-versions", "ModelVersionRequest"),
        ("/api/v1/promotions", "PromotionRequest"),
        ("/api/v1/rollbacks", "RollbackRequest"),  # registry governance
        ("/api/v1/promotions/{promotion_id}/approve", "ApproveRequest"),  # registry governance
        ("/api/v1/uploads", "UploadBeginRequest"),
        ("/api/v1/datasets/{version_id}/operations", "OperationRequest"),
        ("/api/v1/promotions/{promotion_id}/review/votes", "ReviewVoteRequest"),  # blind review
        ("/api/v1/suites", "SuiteRequest"),
        ("/api/v1/suite-runs", "SuiteRunRequest"),
    ],
)
def test_each_endpoint_shows_its_request_model(schema, path, component):
    assert _request_schema(schema, path)["$ref"] == f"#/components/schemas/{component}"


def test_a_job_is_a_finetune_or_an_evaluation_and_its_config_is_the_contracts(schema):
    components = schema["components"]["schemas"]
    kinds = {ref["$ref"].rsplit("/", 1)[-1] for ref in components["JobRequest"]["oneOf"]}
    assert kinds == {"FinetuneRequest", "EvaluateRequest"}
    finetune = components["FinetuneRequest"]
    assert finetune["properties"]["config"]["$ref"].endswith("/TrainingConfig")
    assert set(finetune["properties"]) == set(FinetuneRequest.model_fields)
    methods = components["TrainingConfig"]["properties"]["method"]["discriminator"]["mapping"]
    assert set(methods) == {"lora", "qlora", "full", "prefix_tuning", "p_tuning", "prompt_tuning", "ia3"}
    # The same bounds as the models the API validates with.
    lora_r = TrainingConfig.model_json_schema()["$defs"]["LoraMethod"]["properties"]["r"]
    assert components["LoraMethod"]["properties"]["r"]["minimum"] == lora_r["minimum"] == 1


def test_an_operation_is_one_of_its_kinds_and_an_upload_names_its_settings(schema):
    components = schema["components"]["schemas"]
    kinds = {ref["$ref"].rsplit("/", 1)[-1] for ref in components["OperationRequest"]["oneOf"]}
    assert kinds == {"DedupRequest", "SplitRequest", "ContaminationRequest", "PiiScanRequest"}
    upload = _request_schema(schema, "/api/v1/datasets", "multipart/form-data")
    assert upload["$ref"] == "#/components/schemas/IngestRequest"
    assert {"name", "schema", "mapping", "tokenizer", "max_tokens"} <= set(
        components["IngestRequest"]["properties"]
    )


def test_the_schema_describes_every_view_without_a_warning(capsys, whole_schema):
    # drf-spectacular warns for each view whose answers or path parameters it has to guess;
    # `manage.py check --deploy` reports each warning, so a guess fails the deployment check.
    GENERATOR_STATS.reset()
    whole = whole_schema()
    assert not GENERATOR_STATS, capsys.readouterr().err
    assert "/internal/v1/jobs/{job_id}/claim" in whole["paths"]


def _answer(schema: dict, path: str, method: str, code: int) -> dict:
    return schema["paths"][path][method]["responses"][str(code)]["content"]["application/json"]["schema"]


@pytest.mark.parametrize(
    "path, method, code, component",
    [
        ("/api/v1/jobs/{job_id}", "get", 200, "JobDetail"),
        ("/api/v1/jobs", "post", 201, "JobCreated"),
        ("/api/v1/sweeps/{sweep_id}", "get", 200, "SweepDetail"),
        ("/api/v1/auth/token", "post", 200, "ApiTokenCreated"),
        ("/api/v1/datasets", "post", 202, "DatasetOperation"),
        ("/api/v1/jobs/{job_id}", "get", 404, "Error"),
        ("/api/v1/rollbacks", "post", 201, "Rollback"),  # registry governance
        ("/api/v1/deployments/{target}/history", "get", 200, "DeploymentHistory"),  # registry governance
        ("/api/v1/promotions/{promotion_id}/card", "get", 200, "ModelCard"),
        ("/api/v1/deployments/{target}/card", "get", 200, "ModelCard"),
        ("/api/v1/promotions/{promotion_id}/review", "get", 200, "Review"),  # blind review
        ("/api/v1/promotions/{promotion_id}/review/votes", "post", 201, "ReviewVote"),  # blind review
        ("/api/v1/suite-runs/{suite_run_id}", "get", 200, "SuiteRun"),
        ("/api/v1/promotions/{promotion_id}/gates", "get", 200, "GateReport"),
    ],
)
def test_each_endpoint_shows_what_it_answers(schema, path, method, code, component):
    assert _answer(schema, path, method, code)["$ref"] == f"#/components/schemas/{component}"


def test_the_workers_api_is_described_but_not_published(schema, whole_schema):
    whole = whole_schema()
    jobs = "/internal/v1/jobs/{job_id}"
    assert _answer(whole, f"{jobs}/claim", "post", 200)["$ref"].endswith("/JobSpec")
    assert _answer(whole, f"{jobs}/heartbeat", "post", 200)["$ref"].endswith("/HeartbeatReply")
    assert not [path for path in schema["paths"] if path.startswith("/internal/")]


def test_a_listing_is_its_rows_under_results(schema):
    components = schema["components"]["schemas"]
    listing = components[_answer(schema, "/api/v1/jobs", "get", 200)["$ref"].rsplit("/", 1)[-1]]
    assert listing["properties"]["results"]["items"]["$ref"] == "#/components/schemas/Job"
    assert schema["paths"]["/api/v1/jobs"]["get"]["operationId"] == "api_v1_jobs_list"
    assert components["Error"]["required"] == ["error", "message"]
    token = components["ApiTokenCreated"]["properties"]
    assert {"token", "prefix", "scopes", "expires_at"} <= set(token)


def test_the_committed_schema_is_the_one_the_code_generates(tmp_path):
    """docs/openapi.yaml is the API's contract, reviewed with every change: `make schema` writes it."""
    from django.core.management import call_command

    generated = tmp_path / "openapi.yaml"
    # --validate checks it against the OpenAPI 3.1 specification; --fail-on-warn, that nothing was guessed.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(generated))
    committed = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
    assert generated.read_text() == committed.read_text(), (
        "The API's schema changed: run `make schema` and commit docs/openapi.yaml with the change."
    )
    assert "/internal/" not in generated.read_text().split("paths:", 1)[1].split("components:", 1)[0]
