"""The scenarios of ``pgq bench``, one module each.

A scenario module has ``NAME``, a docstring (its help), ``PARAMS`` (click
options), ``ALL`` (the settings ``pgq bench all`` runs it with: one dict of
overrides per run), ``run(env, tmp, **params) -> Run`` and
``rows(record) -> [(label, value)]`` for the human table.
"""

from __future__ import annotations

from types import ModuleType

from . import (async_enqueue, baseline, depth, enqueue, graph, health, latency, memory, metrics, peers, quick, redis,
               rules, scale, snapshots, soak, steady, throughput)

# In the order `pgq bench all` runs them: the baseline first, so that every later
# figure can be given as a fraction of it; the peers last, next to pgq's figures.
SCENARIOS: dict[str, ModuleType] = {m.NAME: m for m in (
    baseline, enqueue, throughput, graph, rules, steady, latency, scale, depth, peers, quick, redis, soak, health,
    snapshots, metrics, memory, async_enqueue)}
