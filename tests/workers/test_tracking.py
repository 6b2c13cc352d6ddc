"""Metric logging: points leave the training thread in batches, and every one of them arrives."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from workers.tracking import FLUSH_POINTS, MetricSender, RunLogger


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # A SQLite store keeps its artifacts in ./mlruns.
    monkeypatch.chdir(tmp_path)
    return uri


def test_every_metric_point_arrives_once_the_run_ends(tracking_uri: str) -> None:
    with RunLogger.start(experiment="tests/tracking", run_name="all-points", tags={}) as run:
        for step in range(1, 301):
            run.log_metrics({"loss": 1.0 / step, "learning_rate": 1e-3}, step)
    client = MlflowClient(tracking_uri=tracking_uri)

    losses = client.get_metric_history(run.run_id, "loss")
    assert sorted(point.step for point in losses) == list(range(1, 301))
    assert {point.step: point.value for point in losses}[4] == pytest.approx(0.25)
    assert len(client.get_metric_history(run.run_id, "learning_rate")) == 300
    assert client.get_run(run.run_id).info.status == "FINISHED"


def test_flush_returns_only_once_the_points_are_stored(tracking_uri: str) -> None:
    client = MlflowClient(tracking_uri=tracking_uri)
    with RunLogger.start(experiment="tests/tracking", run_name="flush", tags={}) as run:
        for step in range(1, 11):
            run.log_metrics({"loss": float(step)}, step)
        run.flush()
        # Read while the run is still open: a checkpoint named now has its metrics stored.
        assert [point.step for point in client.get_metric_history(run.run_id, "loss")] == list(range(1, 11))


def test_a_full_buffer_is_sent_by_the_background_thread() -> None:
    senders: list[str] = []
    sent = threading.Event()

    def send(points: list[Metric]) -> None:
        senders.append(threading.current_thread().name)
        sent.set()

    sender = MetricSender(send)
    sender.add([Metric("loss", float(value), 0, value) for value in range(FLUSH_POINTS)])

    # Nobody flushes: only the sending thread can have sent them (the timeout only bounds a failure).
    assert sent.wait(timeout=60)
    assert senders == ["mlflow-metrics"]
    sender.close()


def test_points_arrive_in_the_order_they_were_added() -> None:
    values: list[float] = []
    sender = MetricSender(lambda points: values.extend(point.value for point in points))
    for value in range(2500):
        sender.add([Metric("loss", float(value), 0, value)])
    sender.close()

    assert values == [float(v) for v in range(2500)]


def test_a_failed_send_is_raised_in_the_callers_thread() -> None:
    def send(points: list[Metric]) -> None:
        raise ConnectionError("tracking server gone")

    sender = MetricSender(send)
    sender.add([Metric("loss", 1.0, 0, 1)])
    with pytest.raises(ConnectionError, match="tracking server gone"):
        sender.flush()
