"""One attempt of one job, start to finish: the steps in order, and where each report goes."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from workers.engine import JobInputError, distributed
from workers.engine.data import (
    DatasetError,
    MultipleChoiceRow,
    PreferenceRow,
    TrainingRow,
    dataset_files,
    read_multiple_choice_rows,
    read_training_rows,
)
from workers.engine.protocol import emit
from workers.spec import DatasetSchema, EvaluationMetric, JobKind, JobSpec, TrainedArtifactKind
from workers.tracking import RunLogger, download
from workers.uris import UriScope

if TYPE_CHECKING:
    # Only a type here: the suite imports torch, which this module loads only once the data is read.
    from transformers import PreTrainedTokenizerBase

    from workers.engine.evaluation.suite import PredictionRow
    from workers.engine.methods import Model


def run_job(spec: JobSpec, workdir: Path) -> None:
    """Train ``spec`` in ``workdir``; the MLflow run ends FINISHED before ``result`` is emitted.

    The run is started first, so that even a bad dataset leaves a FAILED run
    with the job's tags behind, and the runner learns its id at once.

    In a job of several processes this is rank 0's part; the others train
    alongside it in silence (``_replica_run``).
    """
    if not distributed.is_main():
        _replica_run(spec, workdir)
        return
    scope = uri_scope(spec)
    with attempt_run(spec) as run:
        run.log_params(training_params(spec))
        # The data first: it is small, and a bad row should not wait for a
        # many-gigabyte base model to download.
        files = dataset_paths(spec.dataset_uris, workdir / "inputs", scope)
        rows = read_training_rows(files, spec.dataset_format)
        _rows_fit_objective(spec, rows)
        base_model = download(spec.base_model_uri, workdir / "inputs" / "base-model", scope=scope)
        resume_from = _checkpoint_fetch(spec.resume_checkpoint_uri, workdir / "inputs" / "checkpoint", scope)
        if distributed.is_rank_process():
            inputs = distributed.Inputs(
                dataset_files=[str(path) for path in files],
                base_model=str(base_model),
                base_model_is_local=isinstance(base_model, Path),
                resume_from=str(resume_from) if resume_from else None,
            )
            distributed.inputs_share(workdir, inputs)

        def on_step(step: int, total_steps: int, metrics: Mapping[str, float]) -> None:
            run.log_metrics(metrics, step)
            emit(
                {
                    "event": "progress",
                    "step": step,
                    "total_steps": total_steps,
                    "metrics": dict(metrics),
                }
            )

        def on_checkpoint(step: int, local: Path) -> None:
            # Named to the control plane only once every file is stored: a
            # trainer killed mid-upload leaves the previous checkpoint in force.
            # The metrics up to it are stored first, so a run resumed from it
            # has its whole curve in MLflow.
            run.flush()
            uri = run.log_artifacts(local, f"checkpoints/step-{step}")
            emit({"event": "checkpoint", "step": step, "uri": uri})

        # Imported only now: torch and transformers take seconds to load, and
        # a bad dataset should fail before that.
        from workers.engine.train import train

        trained = train(spec, base_model, rows, workdir, on_step, on_checkpoint, resume_from)
        run.log_metrics(trained.metrics, trained.steps)
        artifacts = {trained.artifact_name: run.log_artifacts(trained.path, trained.artifact_name)}
        if spec.config.export is not None and spec.config.export.merge_adapter:
            artifacts |= _merged_export(spec, run, trained.path, base_model, workdir / "merged")
    emit({"event": "result", "metrics": trained.metrics, "artifacts": artifacts})


def _merged_export(
    spec: JobSpec, run: RunLogger, adapter: Path, base_model: Path | str, out_dir: Path
) -> dict[str, str]:
    """The adapter folded into its base, logged as ``model``; nothing if it cannot be merged.

    A failed merge does not fail the job: the trained adapter is already
    stored and registrable, and training it again would not make it merge.
    """
    from workers.engine.methods import adapter_merge

    try:
        merged = adapter_merge(adapter, base_model, out_dir, trust_remote_code=spec.trust_remote_code)
    except (JobInputError, OSError) as exc:
        print(f"tuneyard: the adapter was not merged for export: {exc}", flush=True)
        return {}
    return {"model": run.log_artifacts(merged, "model")}


def run_evaluate(spec: JobSpec, workdir: Path) -> None:
    """Score the model ``spec`` names on its dataset; the MLflow run ends FINISHED before ``result``.

    The same order as ``run_job``: the run first, then the rows (a bad one fails
    before the model downloads), then the model.
    """
    config = spec.evaluation
    assert config is not None  # JobSpec guarantees it for an evaluate job
    scope = uri_scope(spec)
    with attempt_run(spec, {"tuneyard.kind": JobKind.EVALUATE.value}) as run:
        run.log_params(evaluation_params(spec))
        inputs = workdir / "inputs"
        rows: list[TrainingRow] = []
        choice_rows: list[MultipleChoiceRow] = []
        fewshot_rows: list[MultipleChoiceRow] | None = None
        multiple_choice = EvaluationMetric.MULTIPLE_CHOICE in config.metrics
        if multiple_choice or spec.dataset_format is DatasetSchema.MULTIPLE_CHOICE:
            choice_rows = read_multiple_choice_rows(dataset_paths(spec.dataset_uris, inputs, scope))
            if spec.fewshot_dataset_uri is not None:
                fewshot_rows = read_multiple_choice_rows(
                    dataset_paths([spec.fewshot_dataset_uri], inputs / "fewshot", scope)
                )
        else:
            rows = read_rows(spec.dataset_uris, inputs, spec.dataset_format, scope)
        tokenizer, model = evaluated_model_fetch(spec, inputs, scope)
        # Imported only now: torch and transformers take seconds to load.
        from workers.engine.evaluation.job import evaluation_data, model_evaluate

        data = evaluation_data(
            config, tokenizer, rows=rows, choice_rows=choice_rows, fewshot_rows=fewshot_rows
        )
        count = len(choice_rows) or len(rows)
        print(f"tuneyard: evaluating {', '.join(config.metrics)} on {count} rows", flush=True)
        predictions: list[PredictionRow] = []
        metrics = model_evaluate(model, tokenizer, config, data, predictions_out=predictions)
        run.log_metrics(metrics, 0)
        artifacts: dict[str, str] = {}
        if predictions:
            artifacts["predictions"] = predictions_log(run, predictions, workdir)
    emit({"event": "result", "metrics": metrics, "artifacts": artifacts})


# The evaluated rows' answers, as a Parquet file in the run (the compare page and the evidence
# read it back through controlplane.tracking.table_read).
PREDICTIONS_FOLDER = "tables"
PREDICTIONS_FILE = "predictions.parquet"
PREDICTION_COLUMNS = ("row", "input", "prediction", "extracted", "reference", "score")
# Enough to compare by eye; a text longer than this is cut, so a run's table stays a few MB.
PREDICTION_ROWS_MAX = 10_000
PREDICTION_TEXT_MAX = 2000


def predictions_table(rows: Sequence[PredictionRow]) -> dict[str, list]:
    """The rows column by column (``PREDICTION_COLUMNS``), bounded in rows and text length."""

    def clip(text: str | None) -> str | None:
        if text is None or len(text) <= PREDICTION_TEXT_MAX:
            return text
        return text[:PREDICTION_TEXT_MAX] + "…"

    kept = rows[:PREDICTION_ROWS_MAX]
    return {
        "row": [r.row for r in kept],
        "input": [clip(r.input) for r in kept],
        "prediction": [clip(r.prediction) for r in kept],
        "extracted": [clip(r.extracted) for r in kept],
        "reference": [clip(r.reference) for r in kept],
        "score": [r.score for r in kept],
    }


def predictions_parquet(rows: Sequence[PredictionRow], path: Path) -> Path:
    """``predictions_table`` written as Parquet at ``path``, with a fixed schema: an all-null column
    (no answer extracted anywhere) keeps its type, so tables of several runs concatenate."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("row", pa.int64()),
            ("input", pa.string()),
            ("prediction", pa.string()),
            ("extracted", pa.string()),
            ("reference", pa.string()),
            ("score", pa.float64()),
        ]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(predictions_table(rows), schema=schema), path, compression="zstd")
    return path


def evaluation_params(spec: JobSpec) -> dict[str, object]:
    """The evaluation config, the model and the data as flat params: ``metrics``, ``num_fewshot``,
    ``special_tokens`` (how likelihoods were scored), ``answer.extraction``…"""
    assert spec.evaluation is not None
    params: dict[str, object] = {}
    for key, value in spec.evaluation.model_dump(mode="json").items():
        if isinstance(value, dict):
            params |= {f"{key}.{inner}": setting for inner, setting in value.items() if setting is not None}
        elif value is not None:
            params[key] = ",".join(value) if isinstance(value, list) else value
    params["base_model_uri"] = spec.base_model_uri
    if spec.trained_artifact is not None:
        params[f"{spec.trained_artifact.kind.value}_uri"] = spec.trained_artifact.uri
    params["dataset_uris"] = ",".join(spec.dataset_uris)
    if spec.fewshot_dataset_uri is not None:
        params["fewshot_dataset_uri"] = spec.fewshot_dataset_uri
    return params


@contextmanager
def attempt_run(spec: JobSpec, tags: Mapping[str, str] | None = None) -> Iterator[RunLogger]:
    """The attempt's MLflow run (the job's own, continued on a retry), tagged with the job; its id
    is told to the runner at once."""
    job_tags = {
        **spec.run_tags,
        "tuneyard.job_id": str(spec.job_id),
        "tuneyard.attempt": str(spec.attempt),
        "tuneyard.project": spec.project,
        **(tags or {}),
    }
    with RunLogger.start(
        experiment=spec.mlflow_experiment,
        # A spec from before runs were named after their jobs has no run_name.
        run_name=spec.run_name or f"job-{spec.job_id}-attempt-{spec.attempt}",
        tags=job_tags,
        run_id=spec.mlflow_run_id,
    ) as run:
        emit({"event": "run", "mlflow_run_id": run.run_id})
        yield run


def training_params(spec: JobSpec) -> dict[str, object]:
    """Method, objective and hyperparameters as flat params: ``method``, ``lora.r``, ``learning_rate``…"""
    params: dict[str, object] = {}
    for part in ("method", "objective"):
        values = getattr(spec.config, part).model_dump(mode="json")
        name = values.pop("name")
        params[part] = name
        for key, value in values.items():
            params[f"{name}.{key}"] = ",".join(value) if isinstance(value, list) else value
    params.update(spec.config.hyperparameters.model_dump(mode="json"))
    params["base_model_uri"] = spec.base_model_uri
    params["dataset_uris"] = ",".join(spec.dataset_uris)
    return params


def _rows_fit_objective(spec: JobSpec, rows: list[TrainingRow]) -> None:
    """DPO learns from preference pairs only; say so before the base model downloads."""
    if not spec.config.objective.preference_data:
        return
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, PreferenceRow):
            raise DatasetError(
                f"DPO needs a preference dataset (prompt, chosen, rejected); row {number} is not one"
            )


def _replica_run(spec: JobSpec, workdir: Path) -> None:
    """A rank other than 0: the same rows and model as rank 0, trained in step with it; no reports.

    The Trainer's sampler hands each rank its share of every batch.
    """
    inputs = distributed.inputs_wait(workdir)
    rows = read_training_rows([Path(path) for path in inputs.dataset_files], spec.dataset_format)
    base_model: Path | str = Path(inputs.base_model) if inputs.base_model_is_local else inputs.base_model
    resume_from = Path(inputs.resume_from) if inputs.resume_from else None
    from workers.engine.train import train

    train(spec, base_model, rows, workdir, lambda step, total, metrics: None, None, resume_from)


def uri_scope(spec: JobSpec) -> UriScope:
    """Whose URIs the job may load (its project's, by its MLflow experiment) and this machine's roots."""
    return UriScope.from_env(project=spec.project, experiment=spec.mlflow_experiment)


def read_rows(uris: list[str], inputs: Path, schema: DatasetSchema, scope: UriScope) -> list[TrainingRow]:
    return read_training_rows(dataset_paths(uris, inputs, scope), schema)


def dataset_paths(uris: list[str], inputs: Path, scope: UriScope) -> list[Path]:
    """The datasets' files on this machine, downloaded under ``inputs`` where they are not local."""
    files: list[Path] = []
    for index, uri in enumerate(uris):
        local = download(uri, inputs / f"dataset-{index}", scope=scope)
        if isinstance(local, str):
            raise DatasetError(f"dataset URI {uri!r} is not a local path or an MLflow artifact URI")
        files.extend(dataset_files(local))
    return files


def _checkpoint_fetch(uri: str | None, dst: Path, scope: UriScope) -> Path | None:
    """The checkpoint to resume from, downloaded; None to start from step 0."""
    if uri is None:
        return None
    local = download(uri, dst, scope=scope)
    if isinstance(local, str) or not (local / "trainer_state.json").is_file():
        # Training from scratch instead would look like success and waste the earlier steps.
        raise JobInputError(f"the checkpoint {uri!r} to resume from is not a readable checkpoint directory")
    step = json.loads((local / "trainer_state.json").read_text())["global_step"]
    print(f"tuneyard: resuming from the checkpoint at step {step} ({uri})", flush=True)
    return local


def run_judge(spec: JobSpec, workdir: Path) -> None:
    """Judge the pairs at the spec's dataset URI with the model it names, as ``spec.judge`` says.

    An evaluate job like ``run_evaluate``'s, in the same order (the run, the pairs,
    the model); its metrics are the judge's and its table is each pair's verdict.
    """
    judge = spec.judge
    assert judge is not None  # JobSpec guarantees it for a judge job
    scope = uri_scope(spec)
    with attempt_run(spec, {"tuneyard.kind": JobKind.EVALUATE.value, "tuneyard.judge": "true"}) as run:
        run.log_params(judge_params(spec))
        inputs = workdir / "inputs"
        # Imported only now: the judge's scoring imports torch.
        from workers.engine.evaluation.judge import judge_metrics, pairs_judge, pairs_read
        from workers.engine.evaluation.suite import PredictionRow

        files = dataset_paths(spec.dataset_uris, inputs, scope)
        if len(files) != 1:
            raise DatasetError(f"a judge job reads one file of pairs; its input has {len(files)}")
        pairs = pairs_read(files[0])
        tokenizer, model = evaluated_model_fetch(spec, inputs, scope)
        print(f"tuneyard: judging {len(pairs)} pairs, each in both orders", flush=True)
        judgements = pairs_judge(model, tokenizer, judge, pairs)
        metrics = judge_metrics(judgements)
        run.log_metrics(metrics, 0)
        predictions = [
            PredictionRow(
                row=judgement.pair.row,
                input=judgement.pair.prompt,
                prediction=judgement.verdict.value,
                reference="",
                score=judgement.verdict.score,
            )
            for judgement in judgements
        ]
        # Written as run_evaluate writes its table, so the pages and the evidence read verdicts alike.
        artifacts = {"predictions": predictions_log(run, predictions, workdir)}
    emit({"event": "result", "metrics": metrics, "artifacts": artifacts})


def predictions_log(run: RunLogger, predictions: Sequence[PredictionRow], workdir: Path) -> str:
    """The per-row predictions as the run's Parquet table; its URI, for the job's ``predictions``."""
    tables = workdir / "predictions-table"
    predictions_parquet(predictions, tables / PREDICTIONS_FILE)
    # The folder holds only this file: a retried attempt replaces it rather than adding one.
    return f"{run.log_artifacts(tables, PREDICTIONS_FOLDER)}/{PREDICTIONS_FILE}"


def judge_params(spec: JobSpec) -> dict[str, object]:
    """The judge's settings and model as flat params: ``judge.rubric``, ``judge.batch_size``…"""
    assert spec.judge is not None
    params: dict[str, object] = {f"judge.{key}": value for key, value in spec.judge.model_dump().items()}
    params["base_model_uri"] = spec.base_model_uri
    if spec.trained_artifact is not None:
        params[f"{spec.trained_artifact.kind.value}_uri"] = spec.trained_artifact.uri
    params["pairs_uri"] = ",".join(spec.dataset_uris)
    return params


def evaluated_model_fetch(
    spec: JobSpec, inputs: Path, scope: UriScope
) -> tuple[PreTrainedTokenizerBase, Model]:
    """The tokenizer and the model an evaluate job scores with, downloaded under ``inputs``: the
    base model, with the trained adapter on top, or the trained whole model in its place."""
    artifact = spec.trained_artifact
    artifact_dir = None
    if artifact is not None:
        local = download(artifact.uri, inputs / "trained", scope=scope)
        if isinstance(local, str):
            raise JobInputError(f"the trained artifact {artifact.uri!r} is not a path or an MLflow URI")
        artifact_dir = local
    # A whole trained model replaces its base, which then need not be downloaded at all.
    whole = artifact is not None and artifact.kind is TrainedArtifactKind.MODEL
    base_model = (
        spec.base_model_uri if whole else download(spec.base_model_uri, inputs / "base-model", scope=scope)
    )
    # Imported only now: torch and transformers take seconds to load.
    from workers.engine.evaluation.job import evaluated_model_load

    return evaluated_model_load(
        base_model,
        spec.base_model_uri,
        artifact_dir,
        artifact.kind if artifact else None,
        artifact.uri if artifact else "",
        on_gpu=spec.config.resources.gpus > 0,
        trust_remote_code=spec.trust_remote_code,
    )
