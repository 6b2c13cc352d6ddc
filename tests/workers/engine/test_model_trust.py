"""What a base model may do when a worker loads it: its own code only when allowed, safetensors only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from workers.engine.data import InstructionRow
from workers.engine.methods import BaseModelError, model_load
from workers.engine.train import train
from workers.spec import FullMethod, JobSpec
from workers.tinymodel import build_tiny_model

# A model repository that brings its own code: a Llama under a new name, marked
# so that a test can tell the repository's class was the one that loaded.
MODELING = """
from transformers import LlamaConfig, LlamaForCausalLM


class ProbeConfig(LlamaConfig):
    model_type = "tuneyard-probe"


class ProbeForCausalLM(LlamaForCausalLM):
    config_class = ProbeConfig
    from_repository_code = True
"""


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("trust") / "tiny-model")


@pytest.fixture
def model_with_code(tiny_model: Path, tmp_path: Path) -> Path:
    repo = shutil.copytree(tiny_model, tmp_path / "with-code")
    (repo / "modeling_probe.py").write_text(MODELING)
    config = json.loads((repo / "config.json").read_text())
    config["model_type"] = "tuneyard-probe"
    config["auto_map"] = {
        "AutoConfig": "modeling_probe.ProbeConfig",
        "AutoModelForCausalLM": "modeling_probe.ProbeForCausalLM",
    }
    (repo / "config.json").write_text(json.dumps(config))
    return repo


def test_a_models_own_code_does_not_run_unless_allowed(model_with_code: Path):
    with pytest.raises(BaseModelError, match="cannot load base model 'org/probe'.*custom code"):
        model_load(model_with_code, "org/probe", FullMethod())


def test_a_models_own_code_runs_where_an_admin_allowed_it(model_with_code: Path):
    _, model = model_load(model_with_code, "org/probe", FullMethod(), trust_remote_code=True)

    assert getattr(model, "from_repository_code", False)


def test_pickled_weights_are_refused(tiny_model: Path, tmp_path: Path):
    repo = shutil.copytree(tiny_model, tmp_path / "pickled")
    weights = repo / "model.safetensors"
    torch.save(load_file(weights), repo / "pytorch_model.bin")
    weights.unlink()

    with pytest.raises(BaseModelError, match="cannot load base model 'org/pickled'.*model.safetensors"):
        model_load(repo, "org/pickled", FullMethod())


def test_safetensors_weights_load(tiny_model: Path):
    _, model = model_load(tiny_model, "org/tiny", FullMethod())

    assert not getattr(model, "from_repository_code", False)
    assert sum(p.numel() for p in model.parameters()) > 0


def _spec(model: Path, *, trust_remote_code: bool) -> JobSpec:
    return JobSpec.model_validate(
        {
            "job_id": 1,
            "attempt": 1,
            "project": "demo",
            "base_model_uri": "org/probe",
            "trust_remote_code": trust_remote_code,
            "dataset_uris": ["unused"],
            "mlflow_experiment": "tests",
            "config": {
                # peft has no default target modules for an architecture it does not know.
                "method": {"name": "lora", "target_modules": ["q_proj", "v_proj"]},
                "hyperparameters": {"max_steps": 1, "batch_size": 2},
            },
        }
    )


@pytest.mark.parametrize("trusted", [False, True])
def test_training_follows_the_specs_trust_in_the_models_code(model_with_code: Path, tmp_path: Path, trusted):
    rows = [InstructionRow(instruction="Say hello.", output="Hello!")] * 4
    spec = _spec(model_with_code, trust_remote_code=trusted)

    def run():  # type: ignore[no-untyped-def]
        return train(spec, model_with_code, rows, tmp_path, lambda *args: None)

    if not trusted:
        with pytest.raises(BaseModelError, match="custom code"):
            run()
        return
    assert run().steps == 1
