"""What a base model may do when a worker loads it: its own code only when allowed, safetensors only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from workers.engine.methods import BaseModelError, model_load
from workers.spec import FullMethod
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
