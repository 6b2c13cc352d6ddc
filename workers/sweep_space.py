"""A sweep's search space: which parts of a TrainingConfig to vary, and over what.

Keys are dotted paths into the job's config (``hyperparameters.learning_rate``,
``method.r``); values say how Optuna samples them. It lives on the workers' side
of the contract because both samplers use it: the control plane's Optuna study
(``controlplane.sweeps``) and a Ray Tune driver on a worker (``workers.engine.sweep``),
which samples through Optuna too. Standard library, pydantic and the spec only:
never Django, never torch.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

from workers.spec import Hyperparameters, Method, Objective

if TYPE_CHECKING:
    import optuna

# The names of workers.spec.Method's classes.
MethodName = Literal["lora", "qlora", "full", "prefix_tuning", "p_tuning", "prompt_tuning", "ia3"]


class _Param(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Only sampled when the trial's method is this one (e.g. LoRA's rank).
    when_method: MethodName | None = None


class FloatParam(_Param):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        _range_check(self.low, self.high, self.log)
        return self


class IntParam(_Param):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        _range_check(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise ValueError("a log-scale integer takes no step")
        return self


Choice = str | int | float | bool


class CategoricalParam(_Param):
    type: Literal["categorical"]
    choices: list[Choice] = Field(min_length=1, max_length=100)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class SearchSpace(RootModel[dict[str, Param]]):
    """The parameters to sample, by config path."""

    @model_validator(mode="after")
    def _paths(self) -> SearchSpace:
        if not self.root:
            raise ValueError("the search space is empty: name at least one parameter")
        if len(self.root) > 50:
            raise ValueError("at most 50 parameters")
        for path in self.root:
            _path_check(path)
        return self


def _range_check(low: float, high: float, log: bool) -> None:
    if not low < high:
        raise ValueError(f"the range is empty: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ValueError(f"a log scale needs a positive low bound, not {low}")


# Each method's settings by its name ("full" has none but the name).
_METHOD_FIELDS = {
    method.model_fields["name"].default: set(method.model_fields) for method in get_args(get_args(Method)[0])
}

TUNABLE = {
    "hyperparameters": set(Hyperparameters.model_fields) - {"checkpoint_every_steps"},
    # Every method's fields: a trial's config is validated as a TrainingConfig, which
    # refuses a field its method does not have.
    "method": set().union(*_METHOD_FIELDS.values()),
    "objective": {
        field for objective in get_args(get_args(Objective)[0]) for field in objective.model_fields
    },
}
# Lists and free text: a search over them makes no sense.
_NOT_TUNABLE = {"target_modules", "feedforward_modules", "init_text"}


def _path_check(path: str) -> None:
    section, _, name = path.partition(".")
    if section not in TUNABLE or name not in TUNABLE[section] or name in _NOT_TUNABLE:
        known = ", ".join(
            sorted(f"{s}.{n}" for s, names in TUNABLE.items() for n in names if n not in _NOT_TUNABLE)
        )
        raise ValueError(f"{path!r} is not a tunable parameter; these are: {known}")


def params_apply(base_config: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The base config with the trial's parameters set; not validated (the caller does that)."""
    config = copy.deepcopy(base_config)
    method = params.get("method.name")
    if method is not None and method != config.get("method", {}).get("name", "lora"):
        config["method"] = {"name": method}  # another method: the base's method settings do not apply
    objective = params.get("objective.name")
    if objective is not None and objective != config.get("objective", {}).get("name", "sft"):
        config["objective"] = {"name": objective}  # likewise for another objective
    for path, value in params.items():
        section, name = path.split(".", 1)
        config.setdefault(section, {})[name] = value
    return config


def params_suggest(trial: optuna.Trial, space: SearchSpace, base_method: str) -> dict[str, Any]:
    """Sample the trial's parameters; a parameter for another method than the trial's is skipped."""
    params: dict[str, Any] = {}
    if "method.name" in space.root:
        params["method.name"] = _suggest(trial, "method.name", space.root["method.name"])
    method = params.get("method.name", base_method)
    for path, param in space.root.items():
        if path == "method.name" or (param.when_method and param.when_method != method):
            continue
        if path.startswith("method.") and path.partition(".")[2] not in _METHOD_FIELDS.get(method, set()):
            continue  # a setting of another method (full fine-tuning has none)
        params[path] = _suggest(trial, path, param)
    return params


def _suggest(trial: optuna.Trial, path: str, param: FloatParam | IntParam | CategoricalParam) -> Any:
    if isinstance(param, FloatParam):
        return trial.suggest_float(path, param.low, param.high, log=param.log)
    if isinstance(param, IntParam):
        return trial.suggest_int(path, param.low, param.high, step=param.step, log=param.log)
    return trial.suggest_categorical(path, param.choices)
