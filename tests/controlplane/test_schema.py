"""The OpenAPI schema is generated from the very request models the endpoints validate with."""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator

from controlplane.training.api import FinetuneRequest
from workers.spec import TrainingConfig


@pytest.fixture(scope="module")
def schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


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
        ("/api/v1/uploads", "UploadBeginRequest"),
        ("/api/v1/datasets/{version_id}/operations", "OperationRequest"),
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
