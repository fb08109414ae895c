"""The worker's health measurements (pgq.worker.metrics): what a sample says, from known inputs."""

from __future__ import annotations

import numpy as np
import pytest

from pgq.worker import metrics as m
from pgq.worker.metrics import RESERVOIR, WorkerMetrics


def test_quantiles_match_numpys_linear_definition() -> None:
    values = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0, 7.0]
    for q in (0.0, 0.5, 0.95, 1.0):
        assert m._quantile(values, q) == pytest.approx(float(np.quantile(values, q)))


def test_a_sample_holds_the_deltas_since_the_last_committed_one() -> None:
    metrics = WorkerMetrics()
    for seconds in (0.010, 0.020, 0.030):
        metrics.job_finished(seconds)
    metrics.claim_round_trip(0.002)
    metrics.claim_round_trip(0.004)
    metrics.ack_round_trip(0.001)
    metrics.outcome_waited(0.05)
    metrics.outcome_waited(0.02)
    first, mark = metrics.sample(now=100.0, completed=2, failed=1, in_flight=4, capacity=8, stuck=1)
    assert first["jobs_completed"] == 2 and first["jobs_failed"] == 1
    assert first["error_rate"] == pytest.approx(1 / 3, rel=1e-5)
    assert first["latency_p50_ms"] == pytest.approx(20) and first["latency_p95_ms"] == pytest.approx(29)
    assert first["claim_rtt_ms"] == pytest.approx(3) and first["ack_rtt_ms"] == pytest.approx(1)
    assert first["ack_lag_ms"] == pytest.approx(50)
    assert (first["in_flight"], first["capacity"], first["stuck_handlers"]) == (4, 8, 1)
    assert "interval_seconds" not in first and "loop_lag_ms" not in first
    metrics.committed(mark)
    metrics.loop_lagged(0.003)
    second, _ = metrics.sample(now=130.0, completed=12, failed=1, in_flight=0, capacity=8, stuck=0)
    assert (second["jobs_completed"], second["jobs_failed"], second["error_rate"]) == (10, 0, 0.0)
    assert second["interval_seconds"] == pytest.approx(30) and second["cpu_percent"] >= 0
    assert second["loop_lag_ms"] == pytest.approx(3)
    assert "latency_p50_ms" not in second and "claim_rtt_ms" not in second and second["ack_lag_ms"] == 0


def test_a_sample_that_was_not_written_leaves_its_counts_to_the_next() -> None:
    metrics = WorkerMetrics()
    _, mark = metrics.sample(now=0.0, completed=5, failed=0, in_flight=0, capacity=1, stuck=0)
    metrics.committed(mark)
    metrics.sample(now=30.0, completed=9, failed=1, in_flight=0, capacity=1, stuck=0)  # never committed
    third, _ = metrics.sample(now=60.0, completed=10, failed=1, in_flight=0, capacity=1, stuck=0)
    assert (third["jobs_completed"], third["jobs_failed"], third["interval_seconds"]) == (5, 1, 60)


def test_the_reservoir_keeps_a_bounded_uniform_sample_of_run_times() -> None:
    metrics = WorkerMetrics()
    n = 20 * RESERVOIR
    for i in range(n):
        metrics.job_finished(i / n)  # uniform on [0, 1)
    assert len(metrics._durations) == RESERVOIR
    sample, _ = metrics.sample(now=1.0, completed=n, failed=0, in_flight=0, capacity=1, stuck=0)
    # A uniform sample of 2048 values: the median is within a few percent of 500 ms.
    assert sample["latency_p50_ms"] == pytest.approx(500, abs=50)
    assert sample["latency_p95_ms"] == pytest.approx(950, abs=25)


def test_rss_and_cpu_are_read_from_the_process() -> None:
    assert m.rss_bytes() > 1_000_000
    assert m.cpu_seconds() > 0
