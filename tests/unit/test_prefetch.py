"""The worker's claim sizer (``pgq.worker.prefetch``): pure inputs in, a size out."""

from __future__ import annotations

import pytest

from pgq.worker.prefetch import ALWAYS, ClaimSize, RateWindow, size_claim


def test_an_idle_worker_claims_a_full_batch_capped_by_its_concurrency() -> None:
    assert size_claim(concurrency=16, batch_size=100, rate=0.0, in_flight=0, claiming=0) == ClaimSize(16, ALWAYS)
    assert size_claim(concurrency=500, batch_size=100, rate=0.0, in_flight=0, claiming=0) == ClaimSize(100, ALWAYS)


def test_the_prefetch_buffer_holds_50_ms_of_work_at_most_three_batches() -> None:
    # 2,000 jobs/s: 100 jobs in 50 ms on top of 16 running.
    assert size_claim(concurrency=16, batch_size=100, rate=2000.0, in_flight=16, claiming=0).want == 100
    # 100,000 jobs/s would be 5,000 jobs in 50 ms: capped at three batches (300).
    assert size_claim(concurrency=16, batch_size=100, rate=100_000.0, in_flight=16 + 200, claiming=0).want == 100
    # 99 free is less than a top-up (a batch): wait for a whole batch to free.
    assert size_claim(concurrency=16, batch_size=100, rate=100_000.0, in_flight=16 + 201, claiming=0).want == 0


def test_jobs_asked_for_by_claims_in_flight_count_as_held() -> None:
    alone = size_claim(concurrency=10, batch_size=100, rate=0.0, in_flight=4, claiming=0)
    with_claim = size_claim(concurrency=10, batch_size=100, rate=0.0, in_flight=4, claiming=6)
    assert alone.want == 6
    assert with_claim.want == 0


def test_a_busy_worker_skips_small_top_ups_and_says_when_to_wake() -> None:
    # 1,000 jobs/s: prefetch 50, top-up 25. Held 16 + 40: 10 free, less than a top-up.
    size = size_claim(concurrency=16, batch_size=100, rate=1000.0, in_flight=56, claiming=0)
    assert size.want == 0
    # Wake when in flight falls to 16 + 50 - 25 = 41: then 25 are free.
    assert size.refill_at == 41
    assert size_claim(concurrency=16, batch_size=100, rate=1000.0, in_flight=41, claiming=0).want == 25


def test_the_wake_level_leaves_out_jobs_still_being_claimed() -> None:
    size = size_claim(concurrency=16, batch_size=100, rate=1000.0, in_flight=30, claiming=30)
    assert size == ClaimSize(0, 16 + 50 - 25 - 30)


def test_the_rate_window_measures_after_50_ms_and_smooths() -> None:
    window = RateWindow()
    assert window.update(10.0, 0) == 0.0  # first mark: no rate yet
    assert window.update(10.01, 500) == 0.0  # under 50 ms: not measured
    assert window.update(10.1, 100) == pytest.approx(1000.0)
    assert window.update(10.2, 300) == pytest.approx(0.5 * 1000.0 + 0.5 * 2000.0)
