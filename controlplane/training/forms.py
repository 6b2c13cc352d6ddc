"""The launch forms of the pages: a finetune, an evaluation.

The fine-tune form offers every option of ``workers.spec.TrainingConfig``. Each of its fields
names the place in the config it fills (``SPEC_PATHS``), which is how the form builds a config,
fills itself in from a job's config (clone and edit), and puts an error the contract raises
beside the field it is about. A method's fields apply only to the methods whose class declares
them (PEFT's way: traits on the classes, no name lists here), and so do the objective's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import annotated_types
from django import forms
from django.forms.boundfield import BoundField
from pydantic import BaseModel as PydanticModel
from pydantic import TypeAdapter

from controlplane.accounts.models import Project
from controlplane.datasets.models import DatasetVersion
from controlplane.datasets.selectors import dataset_version_list
from controlplane.errors import DomainError, ValidationFailed, pydantic_parse
from controlplane.training.models import BaseModel, Job
from controlplane.training.selectors import base_model_list, evaluable_job_list
from workers.spec import (
    METHOD_CLASSES,
    DpoLossType,
    DpoObjective,
    EvaluateConfig,
    EvaluationConfig,
    EvaluationMetric,
    Hyperparameters,
    LoraMethod,
    MixedPrecision,
    Optimizer,
    Resources,
    Scheduler,
    SftObjective,
    Strategy,
    TrainingConfig,
    method_names,
)

QUEUE_HELP = "a resource class, such as a GPU type; empty: gpu for GPU jobs, cpu otherwise"
# Every method of workers.spec.Method, in words.
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
OBJECTIVES_BY_NAME: dict[str, type[PydanticModel]] = {
    cls.model_fields["name"].default: cls for cls in (SftObjective, DpoObjective)
}
METRIC_LABELS = {
    EvaluationMetric.PERPLEXITY: "Perplexity",
    EvaluationMetric.BLEU: "BLEU",
    EvaluationMetric.ROUGE: "ROUGE",
    EvaluationMetric.EXACT_MATCH: "Exact match",
    EvaluationMetric.MULTIPLE_CHOICE: "Multiple choice",
    EvaluationMetric.ANSWER_ACCURACY: "Answer accuracy",
}


_STRATEGY: TypeAdapter[Strategy] = TypeAdapter(Strategy)


def _strategy(name: str, **options: Any) -> dict[str, Any]:
    # As Resources stores it, defaults included, so a stored job's strategy finds its choice.
    return _STRATEGY.validate_python({"name": name, **options}).model_dump()


# The launch form's strategies, as the config's ``resources.distributed``; every strategy the
# contract can express has one, so a cloned job's strategy is always offered back.
_DISTRIBUTED: dict[str, dict[str, Any]] = {
    "ddp": _strategy("ddp"),
    "fsdp": _strategy("fsdp"),
    "fsdp_offload": _strategy("fsdp", cpu_offload=True),
    **{f"zero{stage}": _strategy("deepspeed", stage=stage) for stage in (1, 2, 3)},
    **{f"zero{stage}_offload": _strategy("deepspeed", stage=stage, cpu_offload=True) for stage in (1, 2, 3)},
}
DISTRIBUTED_CHOICES = [
    ("ddp", "DDP: a whole copy of the model on each GPU"),
    ("fsdp", "FSDP: the model sharded across the GPUs"),
    ("fsdp_offload", "FSDP with CPU offload"),
    ("zero1", "DeepSpeed ZeRO stage 1 (optimizer state sharded)"),
    ("zero2", "DeepSpeed ZeRO stage 2 (and gradients)"),
    ("zero3", "DeepSpeed ZeRO stage 3 (and weights)"),
    ("zero1_offload", "DeepSpeed ZeRO stage 1, optimizer state in CPU memory"),
    ("zero2_offload", "DeepSpeed ZeRO stage 2, optimizer state in CPU memory"),
    ("zero3_offload", "DeepSpeed ZeRO stage 3, optimizer state and weights in CPU memory"),
]


def model_choice_field(form: forms.Form, name: str) -> forms.ModelChoiceField[Any]:
    """The form's own copy of a field its class declares as a ModelChoiceField (to set its queryset)."""
    field = form.fields[name]
    # Always: the form class declares it so; self.fields holds a copy of the class's field.
    assert isinstance(field, forms.ModelChoiceField)
    return field


def _spec(model: type[PydanticModel], key: str, field_class: type[forms.Field], **kwargs: Any) -> Any:
    """A form field for ``model.key``: its default as the initial value and its inclusive bounds as
    the field's (exclusive ones are left to the contract, which says so beside the field)."""
    info = model.model_fields[key]
    bounds: dict[str, Any] = {}
    for rule in info.metadata:
        if isinstance(rule, annotated_types.Ge):
            bounds["min_value"] = rule.ge
        elif isinstance(rule, annotated_types.Le):
            bounds["max_value"] = rule.le
    if field_class not in (forms.IntegerField, forms.FloatField):
        bounds = {}
    default = info.get_default(call_default_factory=True)
    if default is not None and "initial" not in kwargs:
        kwargs["initial"] = default.value if hasattr(default, "value") else default
    kwargs.setdefault("required", False)
    return field_class(**bounds, **kwargs)


def _choices(enum: Any, labels: dict[str, str] | None = None) -> list[tuple[str, str]]:
    return [(member.value, (labels or {}).get(member.value, member.value)) for member in enum]


_HP = Hyperparameters
_OPTIMIZER_LABELS = {
    "adamw_torch": "AdamW",
    "adamw_torch_fused": "AdamW (fused)",
    "adafactor": "Adafactor",
    "sgd": "SGD",
    "adagrad": "Adagrad",
    "rmsprop": "RMSprop",
    "adamw_bnb_8bit": "AdamW 8-bit (bitsandbytes, GPU only)",
    "paged_adamw_8bit": "Paged AdamW 8-bit (GPU only)",
}
_SCHEDULER_LABELS = {
    "linear": "linear decay",
    "cosine": "cosine",
    "constant": "constant",
    "constant_with_warmup": "constant after warmup",
    "polynomial": "polynomial decay",
}
_EVAL = EvaluationConfig()
_LORA = LoraMethod


class _ModuleListField(forms.Field):
    """Module names, separated by commas or spaces; empty: peft's default for the architecture.
    Whether each is a module name is the contract's check, said beside the field."""

    widget = forms.TextInput
    max_chars = 2000

    def to_python(self, value: Any) -> list[str] | None:
        text = str(value or "")
        if len(text) > self.max_chars:
            raise forms.ValidationError(f"At most {self.max_chars} characters.")
        names = [name for name in re.split(r"[,\s]+", text) if name]
        return names or None

    def prepare_value(self, value: Any) -> Any:
        return ", ".join(value) if isinstance(value, list) else value


# Where each field of the fine-tune form goes in a TrainingConfig. The name, the base model, the
# dataset version and the priority are the job's own, not its config's.
SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "method": ("method", "name"),
    "lora_r": ("method", "r"),
    "lora_alpha": ("method", "alpha"),
    "lora_dropout": ("method", "dropout"),
    "target_modules": ("method", "target_modules"),
    "feedforward_modules": ("method", "feedforward_modules"),
    "double_quant": ("method", "double_quant"),
    "num_virtual_tokens": ("method", "num_virtual_tokens"),
    "projection": ("method", "projection"),
    "encoder_hidden_size": ("method", "encoder_hidden_size"),
    "encoder_type": ("method", "encoder_type"),
    "init_text": ("method", "init_text"),
    "objective": ("objective", "name"),
    "dpo_beta": ("objective", "beta"),
    "dpo_loss_type": ("objective", "loss_type"),
    "merge_adapter": ("export", "merge_adapter"),
    **{
        key: ("hyperparameters", key)
        for key in (
            "learning_rate",
            "epochs",
            "max_steps",
            "batch_size",
            "max_seq_length",
            "gradient_accumulation_steps",
            "optimizer",
            "scheduler",
            "warmup_steps",
            "warmup_ratio",
            "weight_decay",
            "max_grad_norm",
            "mixed_precision",
            "packing",
            "completion_only_loss",
            "gradient_checkpointing",
            "auto_find_batch_size",
            "seed",
            "checkpoint_every_steps",
            "validation_fraction",
            "eval_every_steps",
            "early_stopping_patience",
            "early_stopping_metric",
            "early_stopping_greater_is_better",
        )
    },
    "eval_metrics": ("evaluation", "metrics"),
    "eval_batch_size": ("evaluation", "batch_size"),
    "eval_max_new_tokens": ("evaluation", "max_new_tokens"),
    "exact_match_ignore_case": ("evaluation", "exact_match_ignore_case"),
    "rouge_use_stemmer": ("evaluation", "rouge_use_stemmer"),
    "gpus": ("resources", "gpus"),
    "cpu_processes": ("resources", "cpu_processes"),
    "distributed": ("resources", "distributed"),
    "queue": ("resources", "queue"),
    "timeout_seconds": ("resources", "timeout_seconds"),
}
# Left empty, these mean "none" rather than the contract's default (no checkpoints).
_EMPTY_IS_NONE = {"checkpoint_every_steps"}


def _applies_to(classes: Mapping[str, type[PydanticModel]], key: str) -> list[str]:
    return [name for name, cls in classes.items() if key in cls.model_fields]


def _method_scope(name: str) -> list[str] | None:
    """The methods a field applies to; None: every method."""
    if name == "merge_adapter":
        return method_names("mergeable")
    path = SPEC_PATHS.get(name)
    if path and path[0] == "method" and name != "method":
        return _applies_to(METHODS_BY_NAME, path[1])
    return None


def _objective_scope(name: str) -> list[str] | None:
    path = SPEC_PATHS.get(name)
    if path and path[0] == "objective" and name != "objective":
        return _applies_to(OBJECTIVES_BY_NAME, path[1])
    return None


# Words of the contract's cross-field messages that name no config key of a field.
_MESSAGE_WORDS = {"cpu_offload": "distributed", "use ddp": "distributed", "DPO": "objective"}


@dataclass(frozen=True)
class FormField:
    """A bound field as the launch page shows it: the methods and objectives it applies to."""

    field: BoundField
    methods: str = ""
    objectives: str = ""


@dataclass(frozen=True)
class Fieldset:
    legend: str
    fields: list[FormField]
    advanced: list[FormField]

    @property
    def advanced_open(self) -> bool:
        """An error hidden in a closed <details> would go unseen."""
        return any(item.field.errors for item in self.advanced)


class JobLaunchForm(forms.Form):
    """The launch form. Field bounds are checked again by the JobSpec models in the service."""

    # Basics
    name = forms.CharField(max_length=200, required=False, help_text="empty: method, base model and dataset")
    base_model: forms.ModelChoiceField[BaseModel] = forms.ModelChoiceField(queryset=None, empty_label=None)
    dataset_version: forms.ModelChoiceField[DatasetVersion] = forms.ModelChoiceField(
        queryset=None, empty_label=None, label="Dataset version"
    )
    # Method
    method = forms.ChoiceField(choices=METHOD_CHOICES)
    objective = forms.ChoiceField(
        choices=[("sft", "Supervised (next-token loss)"), ("dpo", "DPO (preference pairs)")],
        initial="sft",
        required=False,
        help_text="DPO learns from a preference dataset (prompt, chosen, rejected)",
    )
    lora_r = _spec(_LORA, "r", forms.IntegerField, label="LoRA rank", required=True)
    lora_alpha = _spec(_LORA, "alpha", forms.IntegerField, label="LoRA alpha", required=True)
    lora_dropout = _spec(_LORA, "dropout", forms.FloatField, label="LoRA dropout", required=True)
    double_quant = forms.BooleanField(
        required=False,
        initial=True,
        label="Double quantization",
        help_text="quantizes the quantization constants too: ~0.4 bit per weight saved",
    )
    target_modules = _ModuleListField(
        required=False,
        label="Target modules",
        help_text="module names, separated by commas; empty: peft's default for the architecture",
    )
    feedforward_modules = _ModuleListField(
        required=False,
        label="Feed-forward modules",
        help_text="of the target modules, those whose input is scaled",
    )
    num_virtual_tokens = forms.IntegerField(
        required=False, initial=20, min_value=1, max_value=1024, label="Virtual tokens"
    )
    projection = forms.BooleanField(
        required=False, label="Reparameterize through an MLP", help_text="P-tuning v2's deep prompts"
    )
    encoder_hidden_size = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=65_536,
        label="Encoder hidden size",
        help_text="empty: 512 for prefix tuning, 128 for P-tuning",
    )
    encoder_type = forms.ChoiceField(
        choices=[("mlp", "MLP"), ("lstm", "LSTM")], initial="mlp", required=False, label="Prompt encoder"
    )
    init_text = forms.CharField(
        required=False,
        max_length=2000,
        label="Start the prompt from this text",
        help_text="empty: random embeddings",
    )
    dpo_beta = _spec(
        DpoObjective, "beta", forms.FloatField, label="DPO beta", help_text="how far the model may move"
    )
    dpo_loss_type = forms.ChoiceField(
        choices=_choices(DpoLossType, {"sigmoid": "sigmoid (the DPO paper's)", "ipo": "IPO"}),
        initial=DpoLossType.SIGMOID.value,
        required=False,
        label="DPO loss",
    )
    merge_adapter = forms.BooleanField(
        required=False,
        label="Merge the adapter for export",
        help_text="also save the adapter folded into the base, as a whole model",
    )
    # Training
    learning_rate = _spec(_HP, "learning_rate", forms.FloatField, label="Learning rate", required=True)
    epochs = _spec(_HP, "epochs", forms.IntegerField, label="Epochs", required=True)
    max_steps = _spec(_HP, "max_steps", forms.IntegerField, label="Max steps", help_text="overrides epochs")
    batch_size = _spec(_HP, "batch_size", forms.IntegerField, label="Batch size", required=True)
    max_seq_length = _spec(_HP, "max_seq_length", forms.IntegerField, label="Max seq length", required=True)
    gradient_accumulation_steps = _spec(
        _HP,
        "gradient_accumulation_steps",
        forms.IntegerField,
        label="Gradient accumulation steps",
        help_text="an optimizer step sees batch size × this many rows",
    )
    optimizer = forms.ChoiceField(
        choices=_choices(Optimizer, _OPTIMIZER_LABELS),
        initial=_HP.model_fields["optimizer"].default.value,
        required=False,
        help_text="the 8-bit ones need a GPU",
    )
    scheduler = forms.ChoiceField(
        choices=_choices(Scheduler, _SCHEDULER_LABELS),
        initial=_HP.model_fields["scheduler"].default.value,
        required=False,
        label="Learning-rate schedule",
    )
    warmup_steps = _spec(_HP, "warmup_steps", forms.IntegerField, label="Warmup steps")
    warmup_ratio = _spec(
        _HP, "warmup_ratio", forms.FloatField, label="Warmup ratio", help_text="or steps, not both"
    )
    weight_decay = _spec(_HP, "weight_decay", forms.FloatField, label="Weight decay")
    max_grad_norm = _spec(_HP, "max_grad_norm", forms.FloatField, label="Gradient clipping (max norm)")
    mixed_precision = forms.ChoiceField(
        choices=_choices(
            MixedPrecision,
            {"auto": "auto (bf16 or fp16 on a GPU)", "no": "no (fp32)", "fp16": "fp16 (CUDA only)"},
        ),
        initial=MixedPrecision.AUTO.value,
        required=False,
        label="Mixed precision",
    )
    packing = forms.ChoiceField(
        choices=[("auto", "auto: pack or group by length"), ("off", "off: padded random batches")],
        initial="auto",
        required=False,
        label="Packing",
    )
    completion_only_loss = forms.BooleanField(
        required=False,
        initial=True,
        label="Loss on responses only",
        help_text="not on the prompt; plain text rows train on every token",
    )
    gradient_checkpointing = forms.BooleanField(
        required=False, label="Gradient checkpointing", help_text="less memory, ~30% slower"
    )
    auto_find_batch_size = forms.BooleanField(
        required=False, label="Halve the batch on out-of-memory", help_text="one process only"
    )
    seed = _spec(_HP, "seed", forms.IntegerField, label="Seed", required=True)
    checkpoint_every_steps = _spec(
        _HP,
        "checkpoint_every_steps",
        forms.IntegerField,
        label="Checkpoint every (steps)",
        help_text="a retried attempt resumes from the last checkpoint; empty for none",
    )
    # Validation & early stopping
    validation_fraction = _spec(
        _HP,
        "validation_fraction",
        forms.FloatField,
        label="Validation split",
        help_text="the fraction of rows held out, such as 0.1; 0: none",
    )
    eval_every_steps = _spec(
        _HP,
        "eval_every_steps",
        forms.IntegerField,
        label="Evaluate every (steps)",
        help_text="empty: at the end",
    )
    eval_metrics = forms.MultipleChoiceField(
        choices=[
            (metric.value, METRIC_LABELS[metric])
            for metric in EvaluationMetric
            if metric is not EvaluationMetric.MULTIPLE_CHOICE  # scored on multiple-choice sets only
        ],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Metrics on the held-out rows",
        help_text="computed once training ends; needs a validation split",
    )
    early_stopping_patience = _spec(
        _HP,
        "early_stopping_patience",
        forms.IntegerField,
        label="Early stopping patience",
        help_text="stop after this many evaluations without improvement; empty: never",
    )
    early_stopping_metric = forms.RegexField(
        regex=_HP.model_fields["early_stopping_metric"].metadata[0].pattern,
        initial=_HP.model_fields["early_stopping_metric"].default,
        required=False,
        label="Early stopping metric",
        error_messages={"invalid": "A metric of the evaluations, such as eval_loss."},
    )
    early_stopping_greater_is_better = forms.BooleanField(
        required=False, label="Higher is better", help_text="for the early stopping metric"
    )
    eval_batch_size = _spec(EvaluationConfig, "batch_size", forms.IntegerField, label="Evaluation batch size")
    eval_max_new_tokens = _spec(
        EvaluationConfig,
        "max_new_tokens",
        forms.IntegerField,
        label="Max new tokens",
        help_text="generation's limit (BLEU, ROUGE, exact match)",
    )
    exact_match_ignore_case = forms.BooleanField(required=False, label="Exact match ignores case")
    rouge_use_stemmer = forms.BooleanField(required=False, label="ROUGE stems words")
    # Resources
    gpus = forms.IntegerField(initial=0, min_value=0, max_value=64, label="GPUs")
    cpu_processes = _spec(
        Resources,
        "cpu_processes",
        forms.IntegerField,
        label="CPU processes",
        help_text="data-parallel processes of a job without GPUs",
    )
    distributed = forms.ChoiceField(
        choices=DISTRIBUTED_CHOICES,
        initial="ddp",
        required=False,
        label="Distributed strategy",
        help_text="how a job of several GPUs shares the work: one process per GPU",
    )
    queue = forms.CharField(required=False, max_length=64, help_text=QUEUE_HELP)
    timeout_seconds = _spec(
        Resources,
        "timeout_seconds",
        forms.IntegerField,
        label="Time limit (seconds)",
        help_text="an attempt running longer is stopped and fails",
    )
    priority = forms.IntegerField(
        initial=0,
        min_value=-100,
        max_value=100,
        help_text="higher goes first in its queue, in steps of about 20",
    )

    FIELDSETS: list[tuple[str, list[str], list[str]]] = [
        ("Basics", ["name", "base_model", "dataset_version"], []),
        (
            "Method",
            [
                "method",
                "lora_r",
                "lora_alpha",
                "lora_dropout",
                "double_quant",
                "num_virtual_tokens",
                "projection",
                "encoder_hidden_size",
                "encoder_type",
                "init_text",
                "objective",
                "dpo_beta",
                "dpo_loss_type",
                "merge_adapter",
            ],
            ["target_modules", "feedforward_modules"],
        ),
        (
            "Training",
            ["learning_rate", "epochs", "max_steps", "batch_size", "max_seq_length"],
            [
                "gradient_accumulation_steps",
                "optimizer",
                "scheduler",
                "warmup_steps",
                "warmup_ratio",
                "weight_decay",
                "max_grad_norm",
                "mixed_precision",
                "packing",
                "seed",
                "checkpoint_every_steps",
                "completion_only_loss",
                "gradient_checkpointing",
                "auto_find_batch_size",
            ],
        ),
        (
            "Validation & early stopping",
            ["validation_fraction", "eval_every_steps", "early_stopping_patience", "eval_metrics"],
            [
                "early_stopping_metric",
                "eval_batch_size",
                "eval_max_new_tokens",
                "early_stopping_greater_is_better",
                "exact_match_ignore_case",
                "rouge_use_stemmer",
            ],
        ),
        (
            "Resources",
            ["gpus", "queue", "priority"],
            ["distributed", "cpu_processes", "timeout_seconds"],
        ),
    ]

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        model_choice_field(self, "base_model").queryset = base_model_list(project=project)
        model_choice_field(self, "dataset_version").queryset = dataset_version_list(project=project)

    # --- what applies -------------------------------------------------------------------------

    def applies(self, name: str) -> bool:
        """Whether a field counts for the chosen method and objective. The others are hidden on
        the page and ignored here, even when they hold something the contract would refuse."""
        data = self.cleaned_data if hasattr(self, "cleaned_data") else {}
        methods, objectives = _method_scope(name), _objective_scope(name)
        if methods is not None and data.get("method") not in methods:
            return False
        return objectives is None or (data.get("objective") or "sft") in objectives

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if "method" in data:
            # During clean() self.errors is the form's own error dict, filled by the fields.
            for name in [name for name in self.errors if name in self.fields and not self.applies(name)]:
                del self.errors[name]
        return data

    @property
    def fieldsets(self) -> list[Fieldset]:
        def item(name: str) -> FormField:
            methods, objectives = _method_scope(name), _objective_scope(name)
            return FormField(
                field=self[name],
                methods=" ".join(methods) if methods is not None else "",
                objectives=" ".join(objectives) if objectives is not None else "",
            )

        return [
            Fieldset(legend, [item(n) for n in shown], [item(n) for n in advanced])
            for legend, shown, advanced in self.FIELDSETS
        ]

    # --- the config it makes, and the config it is filled in from -----------------------------

    def config(self) -> TrainingConfig:
        """The job's config from the form; a ValidationFailed (pydantic's errors in ``details``)
        if the contract refuses it: ``add_contract_error`` puts each beside its field."""
        data = self.cleaned_data
        tree: dict[str, Any] = {}
        for name, path in SPEC_PATHS.items():
            if not self.applies(name):
                continue
            value = data.get(name)
            if name == "distributed":
                value = _DISTRIBUTED[value or "ddp"]
            if value in (None, "", []) and name not in _EMPTY_IS_NONE:
                continue  # empty: the contract's default
            node = tree
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value
        if "metrics" not in tree.get("evaluation", {}):
            tree.pop("evaluation", None)  # no metrics chosen: no held-out evaluation
        else:
            # Held-out texts are cut as training cuts them, so perplexity and the loss compare.
            tree["evaluation"]["max_seq_length"] = data["max_seq_length"]
        if not tree.get("export", {}).get("merge_adapter"):
            tree.pop("export", None)
        return pydantic_parse(TrainingConfig, tree, field="config")

    @staticmethod
    def initial_from(job: Job) -> dict[str, Any]:
        """The form's values for launching ``job`` again, changed or not (clone and edit)."""
        config = TrainingConfig.model_validate(job.config).model_dump(mode="json")
        initial: dict[str, Any] = {
            "name": f"{job.name} (copy)"[:200],
            "base_model": job.base_model_id,
            "dataset_version": job.dataset_version_id,
            "priority": job.priority,
        }
        for name, path in SPEC_PATHS.items():
            node: Any = config
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            if name == "distributed":
                node = next((key for key, value in _DISTRIBUTED.items() if value == node), "ddp")
            elif name == "eval_metrics" and node is None:
                node = []
            if node is not None or name in _EMPTY_IS_NONE:
                initial[name] = node
        return initial

    # --- errors beside their fields ------------------------------------------------------------

    def add_contract_error(self, exc: DomainError) -> None:
        """A refusal of the contract or of a service, each complaint beside the field it is about;
        one that names no field goes to the top of the form."""
        details = exc.details if isinstance(exc, ValidationFailed) and isinstance(exc.details, list) else None
        complaints = [(tuple(e.get("loc", ())), str(e.get("msg", ""))) for e in details or []]
        for loc, message in complaints or [((), exc.message)]:
            message = message.removeprefix("Value error, ")
            name = self._field_at(loc) or self._field_named_in(message)
            if name is not None and name in self.errors:
                continue  # one complaint per field is enough
            self.add_error(name, self._in_words(message))

    def _field_at(self, loc: tuple[Any, ...]) -> str | None:
        # Pydantic puts a tagged union's tag in the path (method.lora.r): leave tags out.
        tags = set(METHODS_BY_NAME) | set(OBJECTIVES_BY_NAME) | {"ddp", "fsdp", "deepspeed"}
        path = tuple(str(part) for part in loc if str(part) not in tags and not isinstance(part, int))
        if path[:2] == ("resources", "distributed"):
            return "distributed"
        for name, spec_path in SPEC_PATHS.items():
            if spec_path == path[: len(spec_path)]:
                return name
        return None

    def _field_named_in(self, message: str) -> str | None:
        """The field a cross-field message names first (``give warmup_steps or warmup_ratio``)."""
        words = dict(_MESSAGE_WORDS, gpus="gpus")
        for name, path in SPEC_PATHS.items():
            if "_" in path[-1]:
                words.setdefault(path[-1], name)  # batch_size: the training's, named first
        found = [
            (match.start(), name)
            for word, name in words.items()
            if (match := re.search(rf"(?<!\w){re.escape(word)}(?!\w)", message))
        ]
        if "dataset version" in message:
            found.append((len(message), "dataset_version"))
        return min(found)[1] if found else None

    def _in_words(self, message: str) -> str:
        """The contract's names of options (``resources.gpus``) as the form's labels ("GPUs")."""
        for name, path in sorted(SPEC_PATHS.items(), key=lambda item: -len(item[1][-1])):
            label = self[name].label
            for spelled in (".".join(path), path[-1]):
                if "_" in spelled or "." in spelled or spelled == "gpus":
                    message = re.sub(rf"(?<![\w.]){re.escape(spelled)}\b", f"“{label}”", message)
        return message[:1].upper() + message[1:]

    @property
    def error_summary(self) -> list[tuple[str, str]]:
        """(field id or "", what it says) of every error, for the summary at the top of the form."""
        summary = [("", str(message)) for message in self.non_field_errors()]
        for name, errors in self.errors.items():
            if name in self.fields:
                label = self[name].label
                summary += [(self[name].id_for_label, f"{label}: {message}") for message in errors]
        return summary


def resources_config(data: dict[str, Any]) -> dict[str, Any]:
    """The resources part of a job's config from a launch form's cleaned data."""
    resources: dict[str, Any] = {"gpus": data["gpus"]}
    if data["queue"]:
        resources["queue"] = data["queue"]
    return resources


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
        queryset=None,
        required=False,
        empty_label="the job's own",
        help_text="needed when no job is chosen above",
    )
    dataset_version: forms.ModelChoiceField[DatasetVersion] = forms.ModelChoiceField(
        queryset=None, empty_label=None, label="Dataset version"
    )
    metrics = forms.MultipleChoiceField(
        choices=[(metric.value, METRIC_LABELS[metric]) for metric in EvaluationMetric],
        initial=[metric.value for metric in _EVAL.metrics],
        widget=forms.CheckboxSelectMultiple,
        help_text="multiple choice needs a multiple-choice dataset, BLEU, ROUGE and exact match "
        "instruction or chat rows, perplexity rows of text",
    )
    num_fewshot = forms.IntegerField(
        initial=_EVAL.num_fewshot,
        min_value=0,
        label="Few-shot examples",
        help_text="solved examples before each question (multiple choice)",
    )
    fewshot_dataset_version: forms.ModelChoiceField[DatasetVersion] = forms.ModelChoiceField(
        queryset=None,
        required=False,
        empty_label="the evaluated rows (never a question's own)",
        label="Few-shot examples from",
    )
    batch_size = forms.IntegerField(initial=_EVAL.batch_size, min_value=1, label="Batch size")
    max_new_tokens = forms.IntegerField(
        initial=_EVAL.max_new_tokens,
        min_value=1,
        label="Max new tokens",
        help_text="generation's limit (BLEU, ROUGE, exact match)",
    )
    gpus = forms.IntegerField(initial=0, min_value=0, label="GPUs")
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

    def add_service_error(self, exc: DomainError) -> None:
        """A refusal of the service beside the field it names first ('num_fewshot'), or the metric or
        few-shot setting it is about; one about nothing of the form goes to the top."""
        message = exc.message
        found = [
            (match.start(), name)
            for name in self.fields
            if "_" in name or name == "gpus"
            if (match := re.search(rf"(?<!\w){name}(?!\w)", message))
        ]
        if re.match(rf"({'|'.join(EvaluationMetric)}) needs", message):
            found.append((0, "metrics"))
        elif re.search(r"\d+-shot", message):
            found.append((len(message), "num_fewshot"))
        elif message.startswith("The few-shot examples"):
            found.append((0, "fewshot_dataset_version"))
        for name in self.fields:
            message = message.replace(f"'{name}'", f"“{self[name].label}”")
        self.add_error(min(found)[1] if found else None, message)

    @staticmethod
    def initial_from(job: Job) -> dict[str, Any]:
        """The form's values for running evaluate job ``job`` again, changed or not."""
        config = EvaluateConfig.model_validate(job.config)
        evaluation, resources = config.evaluation, config.resources
        return {
            "name": f"{job.name} (copy)"[:200],
            "source_job": job.source_job_id,
            "base_model": None if job.source_job_id else job.base_model_id,
            "dataset_version": job.dataset_version_id,
            "metrics": [metric.value for metric in evaluation.metrics],
            "num_fewshot": evaluation.num_fewshot,
            "fewshot_dataset_version": job.fewshot_dataset_version_id,
            "batch_size": evaluation.batch_size,
            "max_new_tokens": evaluation.max_new_tokens,
            "gpus": resources.gpus,
            "queue": resources.queue or "",
            "priority": job.priority,
        }
