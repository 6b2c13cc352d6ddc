"""A search space over the newer methods' settings: parsed, sampled and built into valid configs."""

from __future__ import annotations

import optuna
import pytest

from controlplane.errors import ValidationFailed
from controlplane.sweeps.space import config_build, params_suggest, search_space_parse
from workers.spec import TrainingConfig

BASE = TrainingConfig().model_dump(mode="json")  # LoRA


def test_a_sweep_across_methods_samples_only_the_chosen_methods_settings():
    space = search_space_parse(
        {
            "method.name": {"type": "categorical", "choices": ["lora", "prefix_tuning", "ia3"]},
            "method.r": {"type": "int", "low": 4, "high": 16, "when_method": "lora"},
            "method.num_virtual_tokens": {
                "type": "int",
                "low": 4,
                "high": 32,
                "when_method": "prefix_tuning",
            },
            "hyperparameters.scheduler": {"type": "categorical", "choices": ["linear", "cosine"]},
        },
        BASE,
    )
    trial = optuna.trial.FixedTrial(
        {
            "method.name": "prefix_tuning",
            "method.num_virtual_tokens": 8,
            "hyperparameters.scheduler": "cosine",
        }
    )
    params = params_suggest(trial, space, "lora")
    assert params == {
        "method.name": "prefix_tuning",
        "method.num_virtual_tokens": 8,
        "hyperparameters.scheduler": "cosine",
    }
    config = config_build(BASE, params, space)
    assert config["method"] == {
        "name": "prefix_tuning",
        "num_virtual_tokens": 8,
        "projection": False,
        "encoder_hidden_size": 512,
    }


def test_a_dpo_beta_can_be_swept_on_a_dpo_base_config():
    base = TrainingConfig.model_validate({"objective": {"name": "dpo"}}).model_dump(mode="json")
    space = search_space_parse(
        {"objective.beta": {"type": "float", "low": 0.05, "high": 0.5, "log": True}}, base
    )
    assert config_build(base, {"objective.beta": 0.2}, space)["objective"]["beta"] == 0.2


@pytest.mark.parametrize(
    "space, message",
    [
        (
            {"method.target_modules": {"type": "categorical", "choices": ["q_proj"]}},
            "is not a tunable parameter",
        ),
        ({"method.num_virtual_tokens": {"type": "int", "low": 4, "high": 8}}, "is refused"),  # not LoRA's
        ({"method.name": {"type": "categorical", "choices": ["qlora"]}}, "needs a CUDA GPU"),
        (
            {
                "method.name": {"type": "categorical", "choices": ["lora", "prefix_tuning"]},
                "objective.name": {"type": "categorical", "choices": ["sft", "dpo"]},
            },
            "method 'prefix_tuning' with objective 'dpo' is refused",
        ),
        (
            {
                "hyperparameters.warmup_steps": {"type": "int", "low": 0, "high": 10},
                "hyperparameters.warmup_ratio": {"type": "float", "low": 0.0, "high": 0.1},
            },
            "warmup_steps or warmup_ratio, not both",
        ),
    ],
)
def test_settings_that_cannot_build_a_config_are_refused(space, message):
    with pytest.raises(ValidationFailed, match=message):
        search_space_parse(space, BASE)
