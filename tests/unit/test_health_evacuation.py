"""The rules of health-aware claiming and self-evacuation (``pgq.health.evacuation``)."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

import pgq
from pgq.errors import ConfigurationError
from pgq.health.evacuation import (CONFIDENCE, EXIT_EVACUATED, MIN_PEER_OUTCOMES, EvacuationPolicy, PeerWindow,
                                   claim_batch, process_score)
from pgq.health.score import DEGRADED, FAILING


@pytest.mark.parametrize(("score", "expected"), [
    (None, 10), (float("nan"), 10), (1.0, 10), (0.7, 10),  # healthy or unmeasured: the whole batch
    (0.69, 5), (0.3, 5),  # degraded: half
    (0.29, 1), (0.0, 1),  # failing: one job per claim
])
def test_claim_batch_halves_for_a_degraded_worker_and_takes_one_job_when_failing(
        score: float | None, expected: int) -> None:
    assert claim_batch(10, score) == expected


def test_claim_batch_never_drops_to_zero() -> None:
    assert [claim_batch(n, 0.5) for n in (1, 2, 3)] == [1, 1, 1]


def test_thresholds_and_exit_code() -> None:
    assert (FAILING, DEGRADED) == (0.3, 0.7)
    assert EXIT_EVACUATED == 75  # EX_TEMPFAIL, not click's 2 nor a failure's 1


def policy(after: int = 3, horizon: float = 300.0, rss_limit: int = 0) -> EvacuationPolicy:
    """A policy that predicts the score too (``PGQ_EVACUATION_SCORE_TREND=true``)."""
    return EvacuationPolicy(after_samples=after, horizon_seconds=horizon, rss_limit_bytes=rss_limit,
                            score_trend=True)


def test_evacuates_after_the_configured_number_of_consecutive_failing_samples() -> None:
    p = policy(after=3, horizon=0)
    said = [p.observe(float(t), s) for t, s in enumerate([0.9, 0.2, 0.25, 0.8, 0.2, 0.1])]
    assert said[:5] == [None] * 5  # a healthy sample in between starts the count again
    assert "3 consecutive samples" in str(p.observe(6.0, 0.05))
    assert p.latest == 0.05


def test_a_sample_in_which_no_job_finished_neither_counts_nor_breaks_a_failing_streak() -> None:
    p = policy(after=3, horizon=0)
    assert p.observe(0.0, 0.1, finished=5) is None
    assert p.observe(1.0, 1.0, finished=0) is None  # slow jobs: none finished in this interval
    assert p.latest == 0.1 and p.failing_in_a_row == 1
    assert p.observe(2.0, 0.1, finished=2) is None
    assert p.observe(3.0, 1.0, finished=0) is None
    assert "3 consecutive samples" in str(p.observe(4.0, 0.2, finished=1))


def test_a_sample_whose_few_jobs_all_failed_neither_counts_nor_breaks_a_failing_streak() -> None:
    # A failing worker claims one job at a time; on a loaded machine an interval may finish
    # only one to three of them, all failed: too few to score failing (the pseudo-counts), but
    # no sign of health either. A single success in the sample breaks the streak as before.
    p = policy(after=3, horizon=0)
    assert p.observe(0.0, 0.2, finished=4, failed=4) is None
    assert p.observe(1.0, 0.65, finished=1, failed=1) is None
    assert p.observe(2.0, 0.44, finished=2, failed=2) is None
    assert p.latest == 0.2 and p.failing_in_a_row == 1
    assert p.observe(3.0, 0.1, finished=6, failed=6) is None
    assert p.observe(4.0, 0.68, finished=2, failed=1) is None  # one succeeded: evidence of health
    assert p.failing_in_a_row == 0
    assert p.observe(5.0, 0.2, finished=4, failed=4) is None
    assert p.observe(6.0, 0.3, finished=3, failed=3) is None
    assert p.observe(7.0, 0.2, finished=4, failed=4) is None
    assert "3 consecutive samples" in str(p.observe(8.0, 0.25, finished=5, failed=4))


def test_unmeasured_scores_neither_count_as_failing_nor_evacuate() -> None:
    p = policy(after=1, horizon=300)
    assert [p.observe(float(t), None) for t in range(20)] == [None] * 20
    assert p.latest is None


def test_a_healthy_noisy_fleet_never_evacuates() -> None:
    """False positives: 200 workers x 240 samples of a healthy score with noise (sd 0.05, dips to 0.6)."""
    rng = random.Random(11)
    for _ in range(200):
        p = policy()
        for t in range(240):
            score = min(1.0, max(0.0, rng.gauss(0.9, 0.05) - (0.3 if rng.random() < 0.01 else 0.0)))
            assert p.observe(t * 5.0, score) is None


def test_a_falling_score_is_evacuated_before_it_crosses_and_not_too_early() -> None:
    """A score falling 0.005 per second from 1.0 (crossing 0.3 at t = 140 s), sampled every 5 s
    with noise sd 0.02: predicted with a horizon of 60 s, the evacuation comes before the
    crossing and at most 60 s + 20 % before it."""
    rng = random.Random(5)
    for _ in range(20):
        p = policy(after=3, horizon=60.0)
        fired = None
        for i in range(60):
            t = i * 5.0
            if p.observe(t, max(0.0, 1.0 - 0.005 * t + rng.gauss(0, 0.02))) is not None:
                fired = t
                break
        assert fired is not None and 140 - 60 * 1.2 <= fired < 140, fired


def test_without_score_trend_a_falling_score_waits_for_the_consecutive_rule() -> None:
    p = EvacuationPolicy(after_samples=3, horizon_seconds=60.0)  # the default: no score trend
    said = [p.observe(i * 5.0, max(0.0, 1.0 - 0.03 * i)) for i in range(40)]
    fired = next(i for i, r in enumerate(said) if r is not None)
    assert fired == 26 and "consecutive" in str(said[fired])  # below 0.3 from i = 24 (0.28): 3 in a row


def test_memory_rising_to_the_limit_is_evacuated_by_prediction() -> None:
    p = policy(horizon=120.0, rss_limit=1000)
    reasons = [p.observe(float(t), 1.0, 300 + 10 * t) for t in range(70)]  # full at t = 70 s
    fired = next(i for i, r in enumerate(reasons) if r is not None)
    # Once the history (t seconds) is as long as the time left (70 - t): t = 35.
    assert "memory predicted" in str(reasons[fired]) and fired == 35


def test_predictions_do_not_extrapolate_further_than_the_history() -> None:
    # Declining fast, but only 10 s of history: a crossing 50 s ahead is not trusted yet.
    p = policy(after=99, horizon=300.0)
    reasons = [p.observe(float(t), 0.69 - 0.008 * t) for t in range(11)]
    assert reasons == [None] * 11
    assert 0 < CONFIDENCE < 1


@pytest.mark.parametrize(("field", "value"), [
    ("evacuation_after_samples", 0), ("evacuation_after_samples", True), ("evacuation_horizon_seconds", -1.0),
    ("evacuation_grace_seconds", float("inf")), ("evacuation", "yes"), ("evacuation_score_trend", 1),
])
def test_bad_evacuation_settings_are_refused(field: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match="PGQ_EVACUATION"):
        pgq.Settings(**{field: value})


def test_evacuation_settings_from_the_environment() -> None:
    s = pgq.Settings.from_env({"PGQ_EVACUATION": "false", "PGQ_EVACUATION_GRACE_SECONDS": "2.5",
                               "PGQ_EVACUATION_AFTER_SAMPLES": "4", "PGQ_EVACUATION_HORIZON_SECONDS": "0"})
    assert (s.evacuation, s.evacuation_grace_seconds, s.evacuation_after_samples,
            s.evacuation_horizon_seconds) == (False, 2.5, 4, 0.0)


# --- PeerWindow: is a worker its own samples would evacuate the odd one out?

FAILING_SAMPLE = {"jobs_completed": 0, "jobs_failed": 8, "latency_p50_ms": 5.0, "capacity": 4, "stuck_handlers": 0}


def window(**kw: Any) -> PeerWindow:
    base: dict[str, Any] = dict(completed=0, failed=8, p50_ms=5.0, peers=2, peers_completed=0, peers_failed=0,
                                peers_p50_ms=None, peers_score=None)
    return PeerWindow(**(base | kw))


@pytest.mark.parametrize("peers_failed", [40, 60])
def test_a_worker_failing_no_more_than_its_busy_peers_stays(peers_failed: int) -> None:
    w = window(completed=8, failed=8, peers_completed=100 - peers_failed, peers_failed=peers_failed,
               peers_score=0.6)
    assert w.why_stay(FAILING_SAMPLE, None) is not None


def test_a_worker_failing_far_more_than_its_busy_peers_goes() -> None:
    assert window(failed=20, peers_completed=95, peers_failed=5, peers_score=1.0).why_stay(FAILING_SAMPLE, None) \
        is None


def test_a_worker_failing_most_of_what_succeeds_on_its_peers_goes() -> None:
    # 65 % failing against the peers' 20 %: it fails 56 % of the attempts that succeed elsewhere.
    w = window(completed=33, failed=67, peers_completed=80, peers_failed=20, peers_score=0.8)
    assert w.why_stay(FAILING_SAMPLE, None) is None


def test_a_worker_much_slower_than_its_busy_peers_goes_and_one_as_slow_stays() -> None:
    slow = {"jobs_completed": 10, "jobs_failed": 0, "latency_p50_ms": 400.0}
    w = window(completed=10, failed=0, p50_ms=400.0, peers_completed=50, peers_score=1.0)
    assert replace(w, peers_p50_ms=20.0).why_stay(slow, None) is None
    assert replace(w, peers_p50_ms=300.0).why_stay(slow, None) is not None


def test_peers_failing_too_are_a_shared_cause() -> None:
    assert "shared cause" in (window(peers_completed=5, peers_failed=20, peers_score=0.2)
                              .why_stay(FAILING_SAMPLE, None) or "")


def test_idle_peers_are_not_compared_with() -> None:
    # Peers that finished fewer than MIN_PEER_OUTCOMES jobs: the worker's own evidence decides.
    w = window(peers_completed=MIN_PEER_OUTCOMES - 1, peers_score=1.0)
    assert w.why_stay(FAILING_SAMPLE, None) is None


@pytest.mark.parametrize(("failed_jobs", "elsewhere", "stays"), [(8, 4, True), (8, 8, True), (8, 3, False),
                                                                 (0, 0, False)])
def test_without_busy_peers_jobs_that_failed_elsewhere_too_are_poison(failed_jobs: int, elsewhere: int,
                                                                       stays: bool) -> None:
    w = window(peers=0, failed_jobs=failed_jobs, failed_elsewhere=elsewhere)
    assert (w.why_stay(FAILING_SAMPLE, None) is not None) is stays


def test_a_process_failing_by_itself_goes_whatever_its_peers_and_jobs() -> None:
    # Memory at 99 % of its limit: the process's own trouble; neither poison nor peers keep it.
    sample = FAILING_SAMPLE | {"rss_bytes": 990}
    assert process_score(sample, 1000) < 0.3
    assert window(failed_jobs=8, failed_elsewhere=8).why_stay(sample, 1000) is None
    assert window(completed=8, failed=8, peers_completed=50, peers_failed=50, peers_score=0.6).why_stay(
        sample, 1000) is None
