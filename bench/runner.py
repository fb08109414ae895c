"""Running a plan of scenarios against one database, printing each record as it comes."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import Run, app_name, open_env
from .names import APP_PREFIX
from .scenarios import SCENARIOS

Plan = list[tuple[str, dict[str, Any]]]


def run(plan: Plan, *, database_url: str | None, progress: bool, emit: Callable[[Run], None]) -> list[Run]:
    """Run each (scenario, params) of ``plan`` in order; ``emit`` each run as soon as it ends.

    Later scenarios see the records of earlier ones (``Env.latest``), which is how
    figures are given as fractions of the baseline run in the same invocation.
    """
    env = open_env(database_url, progress=progress)
    runs = []
    try:
        with app_name(f"{APP_PREFIX}-main"), tempfile.TemporaryDirectory(prefix="pgq-bench-") as tmp:
            for name, params in plan:
                result = SCENARIOS[name].run(env, Path(tmp), **params)
                env.results.append(result.record)
                runs.append(result)
                emit(result)
    finally:
        env.close()
    return runs
