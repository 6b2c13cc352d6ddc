"""The new-sweep form of the pages."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from controlplane.accounts.models import Project
from controlplane.datasets.models import DatasetVersion
from controlplane.datasets.selectors import dataset_version_list
from controlplane.errors import pydantic_parse
from controlplane.sweeps.models import Backend, Direction, Pruner, Sampler
from controlplane.sweeps.services import MAX_TRIALS
from controlplane.training.forms import QUEUE_HELP, model_choice_field, resources_config
from controlplane.training.models import BaseModel
from controlplane.training.selectors import base_model_list
from workers.spec import TrainingConfig

DEFAULT_SPACE = {
    "hyperparameters.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
    "method.r": {"type": "categorical", "choices": [4, 8, 16], "when_method": "lora"},
}


# What people call them (the enums' own labels would read "Tpe", "Cmaes", "Qmc").
SAMPLER_LABELS = {
    Sampler.TPE: "TPE",
    Sampler.RANDOM: "Random",
    Sampler.GRID: "Grid",
    Sampler.CMAES: "CMA-ES",
    Sampler.QMC: "QMC",
}
PRUNER_LABELS = {
    Pruner.NONE: "None",
    Pruner.MEDIAN: "Median",
    Pruner.SUCCESSIVE_HALVING: "Successive halving (ASHA)",
    Pruner.HYPERBAND: "Hyperband",
}


class SweepLaunchForm(forms.Form):
    """The new-sweep form; the service checks the search space and every bound again."""

    name = forms.CharField(max_length=200, required=False)
    base_model: forms.ModelChoiceField[BaseModel] = forms.ModelChoiceField(queryset=None, empty_label=None)
    dataset_version: forms.ModelChoiceField[DatasetVersion] = forms.ModelChoiceField(
        queryset=None, empty_label=None
    )
    method = forms.ChoiceField(choices=[("lora", "LoRA"), ("full", "Full fine-tuning")])
    max_steps = forms.IntegerField(initial=100, min_value=1, help_text="per trial")
    batch_size = forms.IntegerField(initial=8, min_value=1)
    max_seq_length = forms.IntegerField(initial=256, min_value=8)
    gpus = forms.IntegerField(initial=0, min_value=0, label="GPUs", help_text="per trial")
    queue = forms.CharField(required=False, max_length=64, help_text=QUEUE_HELP)
    search_space = forms.CharField(
        label="Search space",
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false", "class": "code"}),
        initial=json.dumps(DEFAULT_SPACE, indent=2),
        help_text=(
            "config path → {type: float|int|categorical, low, high, log, step, choices, when_method}; "
            "paths: hyperparameters.* and method.* (e.g. method.r, method.name)"
        ),
    )
    objective_metric = forms.CharField(initial="train_loss", max_length=100, label="Objective metric")
    direction = forms.ChoiceField(choices=Direction.choices)
    backend = forms.ChoiceField(
        choices=[(Backend.OPTUNA, "Optuna (each trial a job)"), (Backend.RAY, "Ray Tune (one driver job)")],
        required=False,  # a form posted before the choice existed means Optuna
        help_text="Ray: TPE or random sampler; ASHA (successive halving) or no pruner; no GPU-hour cap",
    )
    sampler = forms.ChoiceField(choices=list(SAMPLER_LABELS.items()))
    pruner = forms.ChoiceField(
        choices=[("", "The backend's usual (median; ASHA for Ray)"), *PRUNER_LABELS.items()], required=False
    )
    n_trials = forms.IntegerField(initial=12, min_value=1, max_value=MAX_TRIALS, label="Trials")
    parallelism = forms.IntegerField(initial=2, min_value=1, max_value=100, help_text="trials at once")
    gpu_hours_cap = forms.FloatField(required=False, min_value=0.001, max_value=999_999, label="GPU-hour cap")
    seed = forms.IntegerField(initial=0, min_value=0, max_value=2**31 - 1)

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        model_choice_field(self, "base_model").queryset = base_model_list(project=project)
        model_choice_field(self, "dataset_version").queryset = dataset_version_list(project=project)

    def clean_search_space(self) -> object:
        try:
            return json.loads(self.cleaned_data["search_space"])
        except ValueError as exc:
            raise forms.ValidationError(f"The search space is not valid JSON: {exc}") from exc

    def config(self) -> TrainingConfig:
        data = self.cleaned_data
        config = {
            "method": {"name": data["method"]},
            "hyperparameters": {key: data[key] for key in ("max_steps", "batch_size", "max_seq_length")},
            "resources": resources_config(data),
        }
        return pydantic_parse(TrainingConfig, config, field="config")
