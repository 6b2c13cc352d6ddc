"""A sweep's search space, checked at the edge: an empty range, a log scale over a
non-positive bound, a path that names no tunable field, or a bound the training
config itself would refuse is a 400.

The space's models and sampling live in ``workers.sweep_space``, because a Ray
Tune driver on a worker samples from the same space; this module adds the
control plane's validation.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from controlplane.errors import ValidationFailed
from workers.spec import TrainingConfig
from workers.sweep_space import (  # noqa: F401 - the control plane's names for them
    CategoricalParam,
    FloatParam,
    IntParam,
    Param,
    SearchSpace,
    params_apply,
    params_suggest,
)


def search_space_parse(raw: object, base_config: dict[str, Any]) -> SearchSpace:
    """The validated space; every bound and choice must also make a valid training config."""
    try:
        space = SearchSpace.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"] if part not in ("float", "int", "categorical"))
        reason = first.get("ctx", {}).get("error", first["msg"])
        raise ValidationFailed(f"search_space{'.' + where if where else ''}: {reason}") from None
    for path, param in space.root.items():
        values = param.choices if isinstance(param, CategoricalParam) else [param.low, param.high]
        # A setting of one method is checked on that method, whatever the base config's is.
        method = {"method.name": param.when_method} if param.when_method else {}
        for value in values:
            try:
                config_build(base_config, {**method, path: value}, space)
            except ValidationFailed as exc:
                raise ValidationFailed(
                    f"search_space.{path}: the value {value!r} is refused: {exc}"
                ) from None
    _combinations_check(space, base_config)
    return space


def _combinations_check(space: SearchSpace, base_config: dict[str, Any]) -> None:
    """What each parameter allows alone may not go together: refuse such a space before any trial."""
    if {"hyperparameters.warmup_steps", "hyperparameters.warmup_ratio"} <= set(space.root):
        raise ValidationFailed("search_space: search warmup_steps or warmup_ratio, not both")
    choices = {
        path: param.choices
        for path, param in space.root.items()
        if path in ("method.name", "objective.name") and isinstance(param, CategoricalParam)
    }
    if len(choices) < 2:
        return
    for method in choices["method.name"]:
        for objective in choices["objective.name"]:
            try:
                config_build(base_config, {"method.name": method, "objective.name": objective}, space)
            except ValidationFailed as exc:
                raise ValidationFailed(
                    f"search_space: method {method!r} with objective {objective!r} is refused: {exc}"
                ) from None


def config_build(base_config: dict[str, Any], params: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
    """The base config with the trial's parameters set, validated as a TrainingConfig."""
    config = params_apply(base_config, params)
    try:
        return TrainingConfig.model_validate(config).model_dump(mode="json")
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValidationFailed(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
