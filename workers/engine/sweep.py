"""A Ray sweep's driver: what ``python -m workers.engine`` runs for a sweep-driver job.

It runs Ray Tune on the cluster at ``RAY_ADDRESS``, or on a local Ray it starts
when that is unset: Optuna samples the sweep's space, ASHA stops unpromising
trials, and every trial trains with the same engine as a finetune job
(``workers.engine.train.train``), logged as an MLflow child run of the driver's
run. Each trial's progress goes to the control plane over the internal API, so
the sweep's page shows it; the driver's own progress (trials ended) goes to the
runner over stdout, as any job's does.

Imported only in a driver's process (and in Ray's workers, for the trainable):
it loads Ray, which a finetune never needs.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from workers.controlplane_client import AttemptSuperseded, ControlPlaneClient
from workers.engine import JobInputError
from workers.engine.job import attempt_run, read_rows, training_params, uri_scope
from workers.engine.protocol import emit
from workers.spec import JobKind, JobSpec, RaySweep, SweepTrialReport, SweepTrialState
from workers.sweep_space import CategoricalParam, SearchSpace, params_apply, params_suggest
from workers.tracking import RunEnd, RunLogger, download, run_end_unless_ended

log = logging.getLogger(__name__)

# Result keys of our own. Tune compares trials by one metric: OBJECTIVE is the
# intermediate metric at each step and the objective metric in a trial's last
# result (marked FINAL), so ASHA judges the curve and Optuna learns the outcome.
OBJECTIVE = "tuneyard_objective"
FINAL = "tuneyard_final"
RUN_ID = "tuneyard_mlflow_run_id"
STEP = "tuneyard_step"
# A running trial's points reach the control plane this often; its start and end at once.
REPORT_SECONDS = 2.0
# Passed on to Ray's workers, which a cluster elsewhere does not start with our environment.
FORWARDED_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_TOKEN",  # the attempt's credential: trials write runs of their own
    "MLFLOW_DISABLE_TELEMETRY",
    "HF_HUB_OFFLINE",
    # The roots base models may be loaded from (workers.uris), as on the driver's host.
    "MODEL_URI_ROOTS",
    "TOKENIZERS_PARALLELISM",
)


class EveryTrialFailed(JobInputError):
    """No trial of the sweep ended well: the driver fails with the first trial's reason.

    Not retried: a new attempt would run only the trials left, i.e. none, and "succeed".
    """


def run_sweep(spec: JobSpec, workdir: Path) -> None:
    """Run the sweep in ``spec`` to its end; the driver's MLflow run ends before ``result`` is emitted."""
    assert spec.sweep is not None  # JobSpec guarantees it for a sweep-driver
    with attempt_run(spec, {"tuneyard.kind": JobKind.SWEEP_DRIVER.value}) as run:
        run.log_params(_driver_params(spec.sweep))
        reporter = TrialReporter(spec)
        if spec.sweep.n_trials:
            _tune(spec, run.run_id, reporter, workdir)
        summary = reporter.summary()
        run.log_metrics(summary, reporter.ended)
        if spec.sweep.n_trials and not reporter.any_ended_well():  # raised here: the run ends FAILED
            raise EveryTrialFailed(
                f"every trial failed; the first: {reporter.first_error or 'no reason given'}"
            )
    emit({"event": "result", "metrics": summary, "artifacts": {}})


def _driver_params(sweep: RaySweep) -> dict[str, object]:
    return {
        "sweep.backend": "ray",
        "sweep.sampler": sweep.sampler,
        "sweep.scheduler": sweep.scheduler,
        "sweep.objective": f"{sweep.direction} {sweep.objective_metric}",
        "sweep.n_trials": sweep.n_trials,
        "sweep.max_concurrent_trials": sweep.max_concurrent_trials,
        "sweep.seed": sweep.seed,
        "sweep.ray_address": os.environ.get("RAY_ADDRESS") or "local",
    }


# --- Ray ----------------------------------------------------------------------------


def _tune(spec: JobSpec, parent_run_id: str, reporter: TrialReporter, workdir: Path) -> None:
    sweep = spec.sweep
    assert sweep is not None
    temp_dir = _ray_start(sweep)
    try:
        trainable = tune.with_resources(
            tune.with_parameters(trial_train, spec_json=spec.model_dump_json(), parent_run_id=parent_run_id),
            {"cpu": 1, "gpu": spec.config.resources.gpus},
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=_searcher(sweep, spec.config.method.name),
                scheduler=_scheduler(sweep, _most_steps(sweep, spec.config.hyperparameters.max_steps)),
                num_samples=sweep.n_trials,
                max_concurrent_trials=sweep.max_concurrent_trials,
            ),
            run_config=tune.RunConfig(
                name=f"job-{spec.job_id}-attempt-{spec.attempt}",
                storage_path=str(workdir / "tune"),
                callbacks=[reporter],
                verbose=1,
            ),
        )
        tuner.fit()
    finally:
        ray.shutdown()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _ray_start(sweep: RaySweep) -> str | None:
    """Connect to RAY_ADDRESS, or start a local Ray sized for the sweep; the local Ray's folder."""
    runtime_env = {"env_vars": {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(runtime_env=runtime_env)  # ray.init reads RAY_ADDRESS itself
        return None
    os.environ.pop("RAY_ADDRESS", None)  # set but empty: ray.init must not look for a cluster
    # A local Ray needs no token (Ray 2.60 would turn one on and write it under ~);
    # its session files go under a short folder of ours: Unix socket paths are short.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    temp_dir = tempfile.mkdtemp(prefix="ty-ray-")
    ray.init(
        num_cpus=sweep.max_concurrent_trials,  # one CPU per trial, as each trial asks
        include_dashboard=False,
        runtime_env=runtime_env,
        _temp_dir=temp_dir,
    )
    return temp_dir


def _searcher(sweep: RaySweep, base_method: str) -> OptunaSearch:
    space = SearchSpace.model_validate(sweep.search_space)
    # A retried driver goes on from trial first_trial_number: a seed moved on with
    # it keeps it from proposing the trials its first attempt already ran.
    seed = sweep.seed + sweep.first_trial_number
    if sweep.sampler == "random":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed)

    return _FinalOnlySearch(
        space=_DefineByRun(space, base_method), metric=OBJECTIVE, mode=_mode(sweep), sampler=sampler
    )


class _FinalOnlySearch(OptunaSearch):
    """Tells the study a trial's objective only from its final result.

    A trial ASHA stopped ends on an intermediate result (the loss at some
    step, not the objective metric): Ray's OptunaSearch would record it as a
    completed trial with that value; here it is recorded as pruned, as the
    control plane's own Optuna sweeps record it.
    """

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result is not None and not result.get(FINAL):
            result = {key: value for key, value in result.items() if key != OBJECTIVE}
        super().on_trial_complete(trial_id, result=result, error=error)


class _DefineByRun:
    """Optuna's define-by-run space: the same sampling (and the same skipping of another
    method's parameters) as the control plane's own Optuna sweeps. A class, not a closure:
    Tune pickles its searcher with the experiment's state."""

    def __init__(self, space: SearchSpace, base_method: str) -> None:
        self.space, self.base_method = space, base_method

    def __call__(self, trial: optuna.Trial) -> None:
        params_suggest(trial, self.space, self.base_method)


def _most_steps(sweep: RaySweep, base: int | None) -> int | None:
    """The most steps a trial may train: the base config's, or the top of a searched max_steps."""
    searched = SearchSpace.model_validate(sweep.search_space).root.get("hyperparameters.max_steps")
    if searched is None:
        return base
    if isinstance(searched, CategoricalParam):
        numbers = [c for c in searched.choices if isinstance(c, int) and not isinstance(c, bool)]
        return max(numbers, default=None)
    return int(searched.high)


def _scheduler(sweep: RaySweep, max_steps: int | None) -> FIFOScheduler:
    if sweep.scheduler == "fifo":
        return FIFOScheduler()
    # One Tune iteration per training step, and one more for the final result: ASHA
    # must never cut a trial short at max_t before that result arrives.
    max_t = max_steps + 1 if max_steps else 10**9
    # A halving at each rung, from the first step on: sweeps here are small, as in
    # the Optuna pruner's settings, and should stop a hopeless trial early.
    return ASHAScheduler(
        time_attr="training_iteration",
        metric=OBJECTIVE,
        mode=_mode(sweep),
        max_t=max_t,
        grace_period=1,
        reduction_factor=2,
    )


def _mode(sweep: RaySweep) -> str:
    return "min" if sweep.direction == "minimize" else "max"


# --- a trial, in a Ray worker -----------------------------------------------------


def trial_train(params: dict[str, Any], *, spec_json: str, parent_run_id: str) -> None:
    """One trial: the driver's config with ``params`` set, trained as a finetune job would be."""
    driver = JobSpec.model_validate_json(spec_json)
    sweep = driver.sweep
    assert sweep is not None
    spec = _trial_spec(driver, params)
    trial_id = tune.get_context().get_trial_id()
    tags = {
        **driver.run_tags,
        "mlflow.parentRunId": parent_run_id,
        "tuneyard.job_id": str(driver.job_id),
        "tuneyard.project": driver.project,
        "tuneyard.tune_trial_id": trial_id,
    }
    last: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory(prefix="tuneyard-trial-") as tmp,
        RunLogger.start(
            experiment=driver.mlflow_experiment,
            run_name=f"{driver.run_name or f'job-{driver.job_id}'} trial {trial_id}",
            tags=tags,
        ) as run,
    ):
        workdir = Path(tmp)
        run.log_params(training_params(spec))
        scope = uri_scope(spec)
        rows = read_rows(spec.dataset_uris, workdir / "inputs", spec.dataset_format, scope)
        base_model = download(spec.base_model_uri, workdir / "inputs" / "base-model", scope=scope)

        def on_step(step: int, total_steps: int, metrics: Mapping[str, float]) -> None:
            run.log_metrics(metrics, step)
            last.update(metrics)
            if sweep.intermediate_metric not in metrics:
                # An evaluation's log between two steps' (or the reverse): one Tune
                # iteration per point of the watched metric, so ASHA's count is the step's.
                return
            value = metrics[sweep.intermediate_metric]
            tune.report({**metrics, OBJECTIVE: value, STEP: step, RUN_ID: run.run_id})

        from workers.engine.train import train  # torch: only in the trial's process

        try:
            trained = train(spec, base_model, rows, workdir, on_step)
        except SystemExit:
            # Tune stops a trial (ASHA cut it short) by exiting its thread at a report.
            run.end(RunEnd.KILLED)
            raise
        run.log_metrics(trained.metrics, trained.steps)
        run.log_artifacts(trained.path, trained.artifact_name)
    objective = trained.metrics.get(sweep.objective_metric)
    if objective is None:
        reported = ", ".join(sorted(trained.metrics))
        raise JobInputError(f"training reported no {sweep.objective_metric!r}; it reported {reported}")
    tune.report({**last, **trained.metrics, OBJECTIVE: objective, FINAL: 1, RUN_ID: run.run_id})


def _trial_spec(driver: JobSpec, params: dict[str, Any]) -> JobSpec:
    """The finetune a trial runs: the driver's job with the trial's parameters set."""
    body = driver.model_dump(mode="json")
    body |= {
        "kind": JobKind.FINETUNE.value,
        "sweep": None,
        "mlflow_run_id": None,
        "config": params_apply(body["config"], params),
    }
    return JobSpec.model_validate(body)


# --- reporting trials back ------------------------------------------------------------


class TrialReporter(tune.Callback):
    """In the driver: tells the control plane where each trial stands, and the runner how many ended.

    Trials are numbered in the order they start, from the spec's first number on.
    """

    def __init__(self, spec: JobSpec) -> None:
        # No client held here: Tune pickles its callbacks with the experiment's state.
        assert spec.sweep is not None
        self.spec, self.sweep = spec, spec.sweep
        self.numbers: dict[str, int] = {}
        self.points: dict[str, list[tuple[int, float]]] = {}
        self.sent_at: dict[str, float] = {}
        self.ended_states: dict[str, SweepTrialState] = {}
        self.values: dict[str, float] = {}
        self.first_error = ""

    @property
    def ended(self) -> int:
        return len(self.ended_states)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.numbers.setdefault(trial.trial_id, self.sweep.first_trial_number + len(self.numbers))
        self.points.setdefault(trial.trial_id, [])
        self._send(trial, SweepTrialState.RUNNING)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = result.get(self.sweep.intermediate_metric)
        if not result.get(FINAL) and isinstance(value, int | float) and math.isfinite(value):
            self.points.setdefault(trial.trial_id, []).append((int(result[STEP]), float(value)))
        if time.monotonic() - self.sent_at.get(trial.trial_id, 0.0) >= REPORT_SECONDS:
            self._send(trial, SweepTrialState.RUNNING)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        if last.get(FINAL):
            self.values[trial.trial_id] = float(last[OBJECTIVE])
            self._end(trial, SweepTrialState.COMPLETE)
        else:
            # Stopped before its final result: ASHA cut it short.
            self._end(trial, SweepTrialState.PRUNED)
            if last.get(RUN_ID):
                run_end_unless_ended(last[RUN_ID], RunEnd.KILLED)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = _trial_error(trial)
        self.first_error = self.first_error or error
        self._end(trial, SweepTrialState.FAILED, error=error)
        run_id = (trial.last_result or {}).get(RUN_ID)
        if run_id:
            run_end_unless_ended(run_id, RunEnd.FAILED)

    def _end(self, trial: Any, state: SweepTrialState, *, error: str = "") -> None:
        self.ended_states[trial.trial_id] = state
        self._send(trial, state, error=error)
        emit(
            {
                "event": "progress",
                "step": self.ended,
                "total_steps": self.sweep.n_trials,
                "metrics": self.summary(),
            }
        )

    def _send(self, trial: Any, state: SweepTrialState, *, error: str = "") -> None:
        self.sent_at[trial.trial_id] = time.monotonic()
        report = SweepTrialReport(
            attempt=self.spec.attempt,
            number=self.numbers.setdefault(trial.trial_id, self.sweep.first_trial_number + len(self.numbers)),
            params=dict(trial.config),
            state=state,
            value=self.values.get(trial.trial_id),
            intermediate_values=self.points.get(trial.trial_id, [])[-100_000:],
            mlflow_run_id=(trial.last_result or {}).get(RUN_ID),
            error=error[:2000],
        )
        try:
            _control_plane().sweep_trial_report(job_id=self.spec.job_id, report=report)
        except AttemptSuperseded:
            raise  # this attempt no longer counts: stop the whole search
        except httpx.HTTPError:
            # The next report of the trial carries its whole state again; only a last one is lost,
            # and the control plane marks trials left running as failed when the driver ends.
            log.warning("reporting trial %s failed", trial.trial_id, exc_info=True)

    def summary(self) -> dict[str, float]:
        counts = {
            f"trials_{state.value}": float(sum(s is state for s in self.ended_states.values()))
            for state in (SweepTrialState.COMPLETE, SweepTrialState.PRUNED, SweepTrialState.FAILED)
        }
        if self.values:
            pick = min if self.sweep.direction == "minimize" else max
            counts[f"best_{self.sweep.objective_metric}"] = pick(self.values.values())
        return counts

    def any_ended_well(self) -> bool:
        return any(state is not SweepTrialState.FAILED for state in self.ended_states.values())


@functools.cache
def _control_plane() -> ControlPlaneClient:
    return ControlPlaneClient.from_env()


def _trial_error(trial: Any) -> str:
    """The last line of a failed trial's error, as its process wrote it."""
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text(errors="replace") if path else ""
    except OSError:
        text = ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "the trial failed"
