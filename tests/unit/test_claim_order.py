"""Claims in flight deliver their jobs in the order the claims were requested (``InOrder``)."""

from __future__ import annotations

import random
import threading

from pgq.worker.claim_loop import InOrder


def test_a_claim_that_returns_early_waits_for_the_one_requested_before_it() -> None:
    order: InOrder[str] = InOrder()
    first, second, third = order.ticket(), order.ticket(), order.ticket()
    delivered: list[str] = []
    order.done(second, "second", delivered.append)
    order.done(third, "third", delivered.append)
    assert delivered == []
    order.done(first, "first", delivered.append)
    assert delivered == ["first", "second", "third"]


def test_results_in_order_are_delivered_at_once() -> None:
    order: InOrder[int] = InOrder()
    delivered: list[int] = []
    for n in range(3):
        order.done(order.ticket(), n, delivered.append)
        assert delivered == list(range(n + 1))


def test_threads_finishing_in_any_order_deliver_in_ticket_order() -> None:
    order: InOrder[int] = InOrder()
    tickets = [order.ticket() for _ in range(200)]
    shuffled = tickets[:]
    random.Random(9).shuffle(shuffled)
    delivered: list[int] = []
    start = threading.Barrier(4)

    def finish(mine: list[int]) -> None:
        start.wait()
        for t in mine:
            order.done(t, t, delivered.append)

    threads = [threading.Thread(target=finish, args=(shuffled[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert delivered == tickets
