"""Anomalies (pgq.health.anomalies) on synthetic series whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from pgq.health.anomalies import MAD_SCALE, detect
from pgq.health.samples import SampleSet

T = 20


def series(rows: list[list[float]], metric: str = "latency_p50_ms", queues: list[tuple[str, ...]] | None = None,
           ) -> SampleSet:
    values = np.array(rows, dtype=float)
    t = np.tile(np.arange(-values.shape[1] + 1, 1, dtype=float) * 30, (values.shape[0], 1))
    return SampleSet.from_arrays(t, {metric: values}, queues=queues)


def found(samples: SampleSet) -> set[tuple[int, str, str]]:
    index = {w: i for i, w in enumerate(samples.worker_ids)}
    return {(index[a.worker_id], a.metric, a.against) for a in detect(samples)}


def test_a_jump_against_the_workers_own_history_is_an_anomaly() -> None:
    rng = np.random.default_rng(1)
    calm = list(10 + rng.normal(0, 2, T - 1))  # a spread above the floors (1 ms, 5 % of 10 ms)
    samples = series([calm + [30.0], calm + [11.0]])
    [anomaly] = detect(samples)
    assert (anomaly.worker_id, anomaly.against, anomaly.value) == (samples.worker_ids[0], "self", 30.0)
    history = np.array(calm)
    assert anomaly.reference == pytest.approx(history.mean())
    assert anomaly.z == pytest.approx((30 - history.mean()) / history.std(ddof=1))


def test_a_change_below_the_floor_is_not_an_anomaly() -> None:
    # History exactly 10 ms: the spread is floored at max(5 % of 10, 1 ms) = 1 ms.
    assert found(series([[10.0] * (T - 1) + [11.9]])) == set()
    assert found(series([[10.0] * (T - 1) + [12.1]])) == {(0, "latency_p50_ms", "self")}


def test_only_the_bad_direction_counts() -> None:
    assert found(series([[10.0] * (T - 1) + [1.0]])) == set()  # faster is not an anomaly
    assert found(series([[1.0] * (T - 1) + [0.5]], metric="health_score")) == {(0, "health_score", "self")}


def test_too_little_history_judges_nothing() -> None:
    assert found(series([[10.0] * 4 + [50.0]])) == set()  # 4 earlier samples, 5 needed


def test_a_worker_bad_all_along_stands_out_against_its_peers() -> None:
    # Worker 4 has always been slow: its own history finds nothing, its peers do.
    rows = [[10.0] * T, [11.0] * T, [9.0] * T, [10.0] * T, [50.0] * T]
    samples = series(rows)
    [anomaly] = detect(samples)
    assert (anomaly.worker_id, anomaly.against, anomaly.queue) == (samples.worker_ids[4], "peers", "default")
    # median 10, deviations 0, 1, 1, 0, 40: MAD 1, scaled 1 / 0.6745.
    assert anomaly.reference == 10.0
    assert anomaly.z == pytest.approx(40 * MAD_SCALE)


def test_peers_are_the_workers_of_the_same_queue() -> None:
    rows = [[10.0] * T, [10.0] * T, [10.0] * T, [50.0] * T, [50.0] * T, [51.0] * T]
    queues = [("fast",), ("fast",), ("fast",), ("slow",), ("slow",), ("slow",)]
    assert found(series(rows, queues=queues)) == set()
    # A slow worker that also serves "fast" is judged there too.
    queues[3] = ("slow", "fast")
    assert found(series(rows, queues=queues)) == {(3, "latency_p50_ms", "peers")}


def test_fewer_than_three_peers_judge_nothing() -> None:
    assert found(series([[10.0] * T, [50.0] * T])) == set()


def test_unmeasured_metrics_are_never_anomalies() -> None:
    samples = series([[np.nan] * T] * 4)
    assert detect(samples) == []
