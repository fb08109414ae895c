"""Issue 10, fair share as a property: for random weights, batch sizes and numbers of
claims, with every group backlogged, each group's share of the claimed jobs stays
within a bound of its weighted share.

The bound: a claim takes the lowest fair-share tags (vtime + k / weight), so
after any claim the groups' virtual times differ by at most 1 / (the smallest
weight); a group's count then differs from total x weight / sum of weights by
at most (largest weight / smallest weight), plus one for integer rounding.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factories import insert_worker

pytestmark = pytest.mark.integration

_queues = itertools.count()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(weights=st.lists(st.integers(1, 5), min_size=2, max_size=4),
       batches=st.lists(st.integers(1, 12), min_size=1, max_size=15))
def test_each_group_gets_its_weighted_share(conn: psycopg.Connection[Any], weights: list[int],
                                            batches: list[int]) -> None:
    queue = f"fair{next(_queues)}"
    conn.execute("SELECT pgq.set_queue_policy(%s, p_fair_share => true)", (queue,))
    groups = [f"g{i}" for i in range(len(weights))]
    for group, weight in zip(groups, weights, strict=True):
        conn.execute("SELECT pgq.set_group_weight(%s, %s, %s)", (queue, group, weight))
        conn.execute("INSERT INTO pgq.jobs (task, queue, group_key) SELECT 'noop', %s, %s"
                     " FROM generate_series(1, %s)", (queue, group, sum(batches)))
    worker = insert_worker(conn, queues=[queue])
    taken: Counter[str] = Counter()
    for batch in batches:
        rows = conn.execute("SELECT group_key FROM pgq.get_runnable_jobs_v2(%s, %s, %s, 0, NULL)",
                            ([queue], worker, batch)).fetchall()
        assert len(rows) == batch  # every group is backlogged: a claim is never short
        taken.update(r[0] for r in rows)
    total, weight_sum = sum(batches), sum(weights)
    bound = max(weights) / min(weights) + 1
    for group, weight in zip(groups, weights, strict=True):
        assert abs(taken[group] - total * weight / weight_sum) <= bound, (taken, weights, batches)
