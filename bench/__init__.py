"""Load-test scenarios run by ``pgq bench``.

Every scenario runs in a schema of its own (``pgq_bench``, dropped and
migrated again at the start of each run, never the user's ``pgq``), with the
worker processes forked before the parent opens a pool. Each run yields one
record carrying its settings, versions, Postgres settings and machine, so a
number is never quoted without its context; ``bench/RESULTS.md`` describes
each scenario and metric ("Scenario bench (method)").

Modules: ``scenarios/`` (one per scenario), ``measure`` (the measurements they
share), ``workload`` (the job and the child processes' entry points),
``procs`` (child processes and the 100 ms sampler), ``cost`` (Postgres-side
cost), ``common`` (database, schema, record envelope), ``embedded`` (the
embedded PostgreSQL when no database is configured), ``names``, ``report``
and ``plot`` (output), ``cli`` (the click commands ``pgq.cli`` loads),
``runner``. Everything loads on first use, so that a freshly started worker
process (the scale scenario's) imports ``workload`` and pgq only.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Any

_FROM_CLI = ("commands", "execute", "quick_params")


def __getattr__(name: str) -> Any:
    if name in _FROM_CLI:
        return getattr(import_module(".cli", __name__), name)
    here = Path(__file__).parent
    if (here / f"{name}.py").is_file() or (here / name / "__init__.py").is_file():
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
