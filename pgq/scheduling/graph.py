"""Job graphs on the client side: check one ``enqueue_many`` call's graph and order it.

Specs of one call may name each other as parents with ``pgq.ref(index)``. The
database function ``enqueue_jobs_v2`` wants parents listed before their
children (so a cycle cannot even be written); ``order_graph`` checks the refs
(in range, no self-dependency, no cycle, no unique key on a referenced job) and
returns the specs in such an order with the refs renumbered, plus where each
input went. Existing parents (job ids) are checked by the database.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from pgq.errors import InvalidGraph
from pgq.job import JobSpec, Ref


def has_parents(specs: Sequence[JobSpec]) -> bool:
    """True when some spec has ``depends_on`` (the enqueue then goes through ``enqueue_jobs_v2``)."""
    return any(s.depends_on for s in specs)


def reject_refs(spec: JobSpec) -> None:
    """A single ``enqueue`` has no other jobs to refer to."""
    if any(isinstance(p, Ref) for p in spec.depends_on):
        raise InvalidGraph("pgq.ref() refers to another job of the same enqueue_many call; "
                           "enqueue() takes existing job ids in depends_on")


def order_graph(specs: Sequence[JobSpec]) -> tuple[list[JobSpec], list[int]]:
    """Specs ordered parents first (stable), refs renumbered; and ``position[i]``: where input ``i`` went.

    Raises:
        InvalidGraph: a ref out of range, a self-dependency, a cycle, or a unique
            key on a job that another job of the call refers to.
    """
    n = len(specs)
    children: list[list[int]] = [[] for _ in range(n)]
    pending = [0] * n
    for i, spec in enumerate(specs):
        for parent in spec.depends_on:
            if not isinstance(parent, Ref):
                continue
            if parent.index >= n:
                raise InvalidGraph(f"job {i}: pgq.ref({parent.index}) is out of range (the call has {n} jobs)")
            if parent.index == i:
                raise InvalidGraph(f"job {i} depends on itself")
            if specs[parent.index].unique_key is not None:
                raise InvalidGraph(f"job {i} depends on job {parent.index} of the same call, which has a "
                                   "unique_key: enqueue that job first and pass its id")
            children[parent.index].append(i)
            pending[i] += 1
    order = [i for i in range(n) if pending[i] == 0]
    for i in order:  # grows while it is walked (Kahn's algorithm)
        for child in children[i]:
            pending[child] -= 1
            if pending[child] == 0:
                order.append(child)
    if len(order) < n:
        stuck = sorted(i for i in range(n) if pending[i] > 0)
        raise InvalidGraph(f"the jobs at positions {_sample(stuck)} of this call form a cycle (or depend on one); "
                           "nothing was enqueued")
    position = [0] * n
    for new, old in enumerate(order):
        position[old] = new
    ordered = [
        specs[old] if not any(isinstance(p, Ref) for p in specs[old].depends_on) else dataclasses.replace(
            specs[old],
            depends_on=tuple(Ref(position[p.index]) if isinstance(p, Ref) else p for p in specs[old].depends_on))
        for old in order
    ]
    return ordered, position


def _sample(indexes: list[int]) -> str:
    shown = ", ".join(map(str, indexes[:10]))
    return shown + (f", ... ({len(indexes)} in all)" if len(indexes) > 10 else "")
