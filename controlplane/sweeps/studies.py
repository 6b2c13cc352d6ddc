"""The Optuna study of each sweep: its storage in the control plane's database, its sampler and pruner.

Optuna's storage lives in the control plane's database (its own tables) and is
written outside Django's transactions, so neither waits on the other's locks.
"""

from __future__ import annotations

import functools
from typing import Any

import optuna
from django.conf import settings
from django.db import connection

from controlplane.errors import ValidationFailed
from controlplane.sweeps.models import Pruner, Sampler, Sweep
from controlplane.sweeps.space import CategoricalParam, FloatParam, SearchSpace

MAX_GRID_POINTS = 10_000


def storage_url() -> str:
    """Optuna's storage: the control plane's PostgreSQL database, or a SQLite file beside SQLite's."""
    if settings.OPTUNA_STORAGE_URL:
        return settings.OPTUNA_STORAGE_URL
    db = connection.settings_dict  # read now: under tests it names the test database
    if db["ENGINE"].endswith("postgresql"):
        auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        return f"postgresql+psycopg://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"
    return f"sqlite:///{settings.VAR_DIR / 'optuna.sqlite3'}"


# One storage (one connection pool) per URL for the life of the process.
_storages: dict[str, optuna.storages.RDBStorage] = {}


def storage(url: str) -> optuna.storages.RDBStorage:
    if url not in _storages:
        _storages[url] = optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    return _storages[url]


def study_storage() -> optuna.storages.RDBStorage:
    """The storage every study of this control plane lives in."""
    return storage(storage_url())


def storages_close() -> None:
    """Close the studies' database connections (before the database they use is dropped)."""
    for storage in _storages.values():
        storage.remove_session()
        storage.engine.dispose()


def study_load(sweep: Sweep, *, seed_offset: int = 0) -> optuna.Study:
    # A fresh sampler is built at every load, so its seed moves with each trial
    # asked; the same seed every time would propose the same first points again.
    return optuna.load_study(
        study_name=sweep.study_name,
        storage=study_storage(),
        sampler=_sampler(sweep, sweep.seed + seed_offset),
        pruner=_pruner(sweep),
    )


def _sampler(sweep: Sweep, seed: int) -> optuna.samplers.BaseSampler:
    match sweep.sampler:
        case Sampler.RANDOM:
            return optuna.samplers.RandomSampler(seed=seed)
        case Sampler.GRID:
            return optuna.samplers.GridSampler(
                grid(SearchSpace.model_validate(sweep.search_space)), seed=seed
            )
        case Sampler.CMAES:
            return optuna.samplers.CmaEsSampler(seed=seed)
        case Sampler.QMC:
            return optuna.samplers.QMCSampler(seed=sweep.seed, scramble=True)  # one sequence for the sweep
        case _:
            return optuna.samplers.TPESampler(seed=seed)


def _pruner(sweep: Sweep) -> optuna.pruners.BasePruner:
    match sweep.pruner:
        case Pruner.MEDIAN:
            # Small sweeps are the norm: start judging after two finished trials.
            return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
        case Pruner.SUCCESSIVE_HALVING:
            return optuna.pruners.SuccessiveHalvingPruner()
        case Pruner.HYPERBAND:
            return optuna.pruners.HyperbandPruner()
        case _:
            return optuna.pruners.NopPruner()


def trial_id(sweep: Sweep, number: int) -> int:
    storage = study_storage()
    return storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(sweep.study_name), number
    )


def grid(space: SearchSpace) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for path, param in space.root.items():
        if isinstance(param, CategoricalParam):
            grid[path] = list(param.choices)
        elif isinstance(param, FloatParam) or param.log:
            raise ValidationFailed(f"a grid needs categorical or linear integer parameters; {path!r} is not")
        else:
            grid[path] = list(range(param.low, param.high + 1, param.step))
    points = functools.reduce(lambda n, values: n * len(values), grid.values(), 1)
    if points > MAX_GRID_POINTS:
        raise ValidationFailed(f"the grid has {points} points; at most {MAX_GRID_POINTS}")
    return grid
