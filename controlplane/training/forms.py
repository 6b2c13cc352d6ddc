"""The launch forms of the pages: a finetune, an evaluation."""

from __future__ import annotations

from typing import Any

from django import forms

from controlplane.accounts.models import Project
from controlplane.datasets.models import DatasetVersion
from controlplane.datasets.selectors import dataset_version_list
from controlplane.errors import pydantic_parse
from controlplane.training.models import BaseModel, Job
from controlplane.training.selectors import base_model_list, evaluable_job_list
from workers.spec import (
    METHOD_CLASSES,
    EvaluateConfig,
    EvaluationConfig,
    EvaluationMetric,
    Hyperparameters,
    LoraMethod,
    TrainingConfig,
)

_HP = Hyperparameters()
QUEUE_HELP = "a resource class, such as a GPU type; empty: gpu for GPU jobs, cpu otherwise"
_LORA = LoraMethod()
# Every method of workers.spec.Method; each starts from its defaults, the LoRA ones take the rank fields.
METHOD_CHOICES = [
    ("lora", "LoRA"),
    ("qlora", "QLoRA (4-bit, GPU only)"),
    ("full", "Full fine-tuning"),
    ("prefix_tuning", "Prefix tuning"),
    ("p_tuning", "P-tuning"),
    ("prompt_tuning", "Prompt tuning"),
    ("ia3", "IA3"),
]


METHODS_BY_NAME = {cls.model_fields["name"].default: cls for cls in METHOD_CLASSES}


# The launch form's strategies, as the config's ``resources.distributed``.
_DISTRIBUTED: dict[str, dict[str, Any]] = {
    "ddp": {"name": "ddp"},
    "fsdp": {"name": "fsdp"},
    "fsdp_offload": {"name": "fsdp", "cpu_offload": True},
    "zero1": {"name": "deepspeed", "stage": 1},
    "zero2": {"name": "deepspeed", "stage": 2},
    "zero3": {"name": "deepspeed", "stage": 3},
}
DISTRIBUTED_CHOICES = [
    ("ddp", "DDP: a whole copy of the model on each GPU"),
    ("fsdp", "FSDP: the model sharded across the GPUs"),
    ("fsdp_offload", "FSDP with CPU offload"),
    ("zero1", "DeepSpeed ZeRO stage 1 (optimizer state sharded)"),
    ("zero2", "DeepSpeed ZeRO stage 2 (and gradients)"),
    ("zero3", "DeepSpeed ZeRO stage 3 (and weights)"),
]


def model_choice_field(form: forms.Form, name: str) -> forms.ModelChoiceField[Any]:
    """The form's own copy of a field its class declares as a ModelChoiceField (to set its queryset)."""
    field = form.fields[name]
    # Always: the form class declares it so; self.fields holds a copy of the class's field.
    assert isinstance(field, forms.ModelChoiceField)
    return field


class JobLaunchForm(forms.Form):
    """The launch form. Field bounds are checked again by the JobSpec models in the service."""

    name = forms.CharField(max_length=200, required=False)
    base_model: forms.ModelChoiceField[BaseModel] = forms.ModelChoiceField(queryset=None, empty_label=None)
    dataset_version: forms.ModelChoiceField[DatasetVersion] = forms.ModelChoiceField(
        queryset=None, empty_label=None
    )
    method = forms.ChoiceField(choices=METHOD_CHOICES)
    lora_r = forms.IntegerField(label="LoRA rank", initial=_LORA.r, min_value=1)
    lora_alpha = forms.IntegerField(label="LoRA alpha", initial=_LORA.alpha, min_value=1)
    lora_dropout = forms.FloatField(label="LoRA dropout", initial=_LORA.dropout, min_value=0)
    learning_rate = forms.FloatField(initial=_HP.learning_rate)
    epochs = forms.IntegerField(initial=_HP.epochs, min_value=1)
    max_steps = forms.IntegerField(required=False, min_value=1, help_text="overrides epochs")
    batch_size = forms.IntegerField(initial=_HP.batch_size, min_value=1)
    max_seq_length = forms.IntegerField(initial=_HP.max_seq_length, min_value=8)
    seed = forms.IntegerField(initial=_HP.seed, min_value=0)
    checkpoint_every_steps = forms.IntegerField(
        initial=_HP.checkpoint_every_steps,
        required=False,
        min_value=1,
        help_text="a retried attempt resumes from the last checkpoint; empty for none",
    )
    merge_adapter = forms.BooleanField(
        required=False,
        label="Merge the adapter for export",
        help_text="LoRA or IA3: also save the adapter folded into the base, as a whole model",
    )
    gpus = forms.IntegerField(initial=0, min_value=0)
    distributed = forms.ChoiceField(
        choices=DISTRIBUTED_CHOICES,
        initial="ddp",
        required=False,
        help_text="how a job of several GPUs shares the work: one process per GPU",
    )
    queue = forms.CharField(required=False, max_length=64, help_text=QUEUE_HELP)
    timeout_seconds = forms.IntegerField(
        required=False, min_value=1, help_text="an attempt running longer is stopped and fails"
    )
    priority = forms.IntegerField(
        initial=0,
        min_value=-100,
        max_value=100,
        help_text="higher goes first in its queue, in steps of about 20",
    )

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        model_choice_field(self, "base_model").queryset = base_model_list(project=project)
        model_choice_field(self, "dataset_version").queryset = dataset_version_list(project=project)

    def config(self) -> TrainingConfig:
        """The job's config from the form; a ValidationFailed naming the first field the contract refuses."""
        data = self.cleaned_data
        method: dict[str, Any] = {"name": data["method"]}
        if issubclass(METHODS_BY_NAME[data["method"]], LoraMethod):  # QLoRA is a LoRA too
            method |= {
                "r": data["lora_r"],
                "alpha": data["lora_alpha"],
                "dropout": data["lora_dropout"],
            }
        hyperparameters = {
            key: data[key] for key in ("learning_rate", "epochs", "batch_size", "max_seq_length", "seed")
        }
        if data["max_steps"]:
            hyperparameters["max_steps"] = data["max_steps"]
        hyperparameters["checkpoint_every_steps"] = data["checkpoint_every_steps"]
        resources = resources_config(data)
        resources["distributed"] = _DISTRIBUTED[data["distributed"] or "ddp"]
        if data["timeout_seconds"]:
            resources["timeout_seconds"] = data["timeout_seconds"]
        config = {"method": method, "hyperparameters": hyperparameters, "resources": resources}
        if data["merge_adapter"]:
            config["export"] = {"merge_adapter": True}
        return pydantic_parse(TrainingConfig, config, field="config")


def resources_config(data: dict[str, Any]) -> dict[str, Any]:
    """The resources part of a job's config from a launch form's cleaned data."""
    resources: dict[str, Any] = {"gpus": data["gpus"]}
    if data["queue"]:
        resources["queue"] = data["queue"]
    return resources


_EVAL = EvaluationConfig()


class _JobChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Job) -> str:
        return f"job {obj.pk}: {obj.name}"


class EvaluateLaunchForm(forms.Form):
    """The evaluate form: a base model, or a finetune's trained weights, scored on a dataset version.

    Which metrics fit which dataset is checked by the service, which says why.
    """

    name = forms.CharField(max_length=200, required=False)
    source_job = _JobChoiceField(
        queryset=None,
        required=False,
        label="Trained by job",
        empty_label="none: the base model as it is",
        help_text="a succeeded finetune; its adapter or model is evaluated on its own base model",
    )
    base_model: forms.ModelChoiceField[BaseModel] = forms.ModelChoiceField(
        queryset=None, required=False, help_text="needed when no job is chosen above"
    )
    dataset_version: forms.ModelChoiceField[DatasetVersion] = forms.ModelChoiceField(
        queryset=None, empty_label=None
    )
    metrics = forms.MultipleChoiceField(
        choices=[(metric.value, metric.value) for metric in EvaluationMetric],
        initial=[metric.value for metric in _EVAL.metrics],
        widget=forms.CheckboxSelectMultiple,
        help_text="multiple_choice needs a multiple-choice dataset, BLEU, ROUGE and exact match "
        "instruction or chat rows, perplexity rows of text",
    )
    num_fewshot = forms.IntegerField(
        initial=_EVAL.num_fewshot,
        min_value=0,
        help_text="solved examples before each question (multiple_choice)",
    )
    fewshot_dataset_version: forms.ModelChoiceField[DatasetVersion] = forms.ModelChoiceField(
        queryset=None,
        required=False,
        empty_label="the evaluated rows (never a question's own)",
        label="Few-shot examples from",
    )
    batch_size = forms.IntegerField(initial=_EVAL.batch_size, min_value=1)
    max_new_tokens = forms.IntegerField(
        initial=_EVAL.max_new_tokens, min_value=1, help_text="generation's limit (BLEU, ROUGE, exact match)"
    )
    gpus = forms.IntegerField(initial=0, min_value=0)
    queue = forms.CharField(required=False, max_length=64, help_text=QUEUE_HELP)
    priority = forms.IntegerField(initial=0, min_value=-100, max_value=100)

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        model_choice_field(self, "source_job").queryset = evaluable_job_list(project=project)
        model_choice_field(self, "base_model").queryset = base_model_list(project=project)
        model_choice_field(self, "dataset_version").queryset = dataset_version_list(project=project)
        model_choice_field(self, "fewshot_dataset_version").queryset = dataset_version_list(project=project)

    def config(self) -> EvaluateConfig:
        data = self.cleaned_data
        evaluation = {key: data[key] for key in ("metrics", "num_fewshot", "batch_size", "max_new_tokens")}
        config = {"evaluation": evaluation, "resources": resources_config(data)}
        return pydantic_parse(EvaluateConfig, config, field="config")
