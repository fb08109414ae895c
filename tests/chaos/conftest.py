"""Fixtures of the chaos suite: a test-owned Postgres cluster, one fresh database per
scenario, the run harness, the mode parameter and the figures table.

- ``chaos_cluster`` (session): initdb + pg_ctl on a free port (``chaos_cluster.py``);
  a template database migrated to head with the ``chaos.runs`` table, cloned per test.
- ``mode``: the modes a scenario runs in, from ``MODES`` (``chaos_harness``): ``postgres`` and ``redis``
  (the accelerator on). A mode is a name plus the worker environment it needs
  (``chaos_harness.Mode``). A scenario for one mode only parametrises ``mode``
  itself (``@pytest.mark.parametrize("mode", ["redis"], indirect=True)``). A long scenario whose
  mode does not change what it proves is marked ``@pytest.mark.chaos_short_modes("postgres")``:
  that mode in the default suite, every mode with ``--chaos-long``.
- ``chaos_redis`` (session): a redis-server the suite owns (``tests/redis_service.py``),
  shared by the Redis-mode runs, each with a key prefix of its own; a scenario
  that kills or flushes Redis passes a server of its own (``chaos(redis=...)``).
- ``scale``: the CI sizes, or the long ones with ``pytest -m chaos --chaos-long``
  (the option is registered in ``tests/conftest.py``).
- ``chaos``: a factory for ``ChaosRun``; every run is closed (processes killed) at the end.

Each scenario's figures are printed in a table at the end of the session (and
appended as JSON lines to ``$PGQ_CHAOS_REPORT`` when set): the numbers in
``docs/reliability.md`` come from there.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos_cluster import Cluster, ClusterUnavailable
from chaos_harness import MODES, ChaosRun, Mode, Scale
from chaos_report import RESULTS
from chaos_topology import prepare_database
from redis_service import NoRedis, OwnedRedis

_names = itertools.count(1)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The ``mode`` of each scenario: every one of ``MODES``, unless the scenario parametrises it
    itself (or, as the evacuation scenarios do, defines its own ``mode`` fixture); with
    ``@pytest.mark.chaos_short_modes("postgres")``, only those modes in the default suite (the
    mode does not change what it proves, and it is long), every one with ``--chaos-long``."""
    if "mode" not in metafunc.fixturenames or hasattr(metafunc.module, "mode"):
        return
    if any(m.args and m.args[0] == "mode" for m in metafunc.definition.iter_markers("parametrize")):
        return
    marker = metafunc.definition.get_closest_marker("chaos_short_modes")
    short = marker is not None and not metafunc.config.getoption("--chaos-long", default=False)
    metafunc.parametrize("mode", list(marker.args) if short and marker else list(MODES), indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.chaos)
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def chaos_cluster(pytestconfig: pytest.Config) -> Iterator[Cluster]:
    """A Postgres cluster this session owns (stopped, crashed and restarted by the tests)."""
    pytestconfig.stash[RESULTS] = []
    try:
        cluster = Cluster()
        cluster.init()
        cluster.start()
    except ClusterUnavailable as exc:
        # An error, not a skip: green must mean the scenarios really ran.
        pytest.fail(str(exc), pytrace=False)
    try:
        template = "chaos_template"
        prepare_database(cluster, template)
        with cluster.admin() as admin:
            # No session may stay on a template while it is cloned.
            admin.execute(f"ALTER DATABASE {template} IS_TEMPLATE true")
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def chaos_db(chaos_cluster: Cluster) -> Iterator[str]:
    """URL of a fresh database on the chaos cluster, migrated, with ``chaos.runs``."""
    if not chaos_cluster.running():
        chaos_cluster.start()  # a failed scenario may have left it stopped
    name = f"chaos_{os.getpid()}_{next(_names)}"
    url = chaos_cluster.create_database(name, template="chaos_template")
    yield url
    if not chaos_cluster.running():
        chaos_cluster.start()
    chaos_cluster.drop_database(name)


@pytest.fixture(scope="session")
def chaos_redis() -> Iterator[OwnedRedis]:
    """A redis-server this session owns, for the Redis-mode runs (each with its own key prefix)."""
    try:
        server = OwnedRedis().start()
    except NoRedis as exc:
        pytest.fail(str(exc), pytrace=False)  # an error, not a skip
    yield server
    server.stop()


@pytest.fixture
def mode(request: pytest.FixtureRequest) -> Mode:
    return MODES[request.param]


@pytest.fixture
def scale(pytestconfig: pytest.Config) -> Scale:
    return Scale(long=bool(pytestconfig.getoption("--chaos-long", default=False)))


@pytest.fixture
def chaos(chaos_cluster: Cluster, chaos_db: str, mode: Mode, scale: Scale, tmp_path: Path,
          request: pytest.FixtureRequest) -> Iterator[Callable[..., ChaosRun]]:
    """``chaos(name=..., jobs=..., workers=..., concurrency=..., seed=..., env=...)`` -> a started ``ChaosRun``."""
    runs: list[ChaosRun] = []

    def make(**kwargs: Any) -> ChaosRun:
        if mode.uses_redis and kwargs.get("redis") is None:
            kwargs["redis"] = request.getfixturevalue("chaos_redis")
        run = ChaosRun(chaos_cluster, chaos_db, mode, tmp_path, scale=scale, **kwargs)
        runs.append(run)
        return run

    yield make
    for run in runs:
        if request.node.stash.get(_FAILED, False):
            # Shown under "Captured stdout teardown" of the failed test.
            print(run.diagnostics())
        run.close()


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_FAILED] = True
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = config.stash.get(RESULTS, [])
    if not results:
        return
    terminalreporter.section("chaos scenarios")
    columns = [("scenario", 36), ("mode", 9), ("jobs", 6), ("runs", 6), ("lost", 4), ("dup", 4), ("rescued", 7),
               ("free", 5), ("late", 5), ("faults", 6), ("recovered max/mean s", 21), ("via redis", 9), ("mirror stale", 12),
               ("wall s", 7)]
    terminalreporter.write_line(" ".join(f"{name:<{width}}" if i < 2 else f"{name:>{width}}"
                                         for i, (name, width) in enumerate(columns)))
    for r in results:
        recovered = "-" if r["recovered_in_max_s"] is None else f"{r['recovered_in_max_s']}/{r['recovered_in_mean_s']}"
        values = [r["scenario"], r["mode"], r["expected"], r["executions"], r["lost"], r["duplicated"],
                  r["rescued_attempts"], r["free_rescues"], r["late"], r["faults"], recovered, r["via_redis"],
                  "-" if r["mirror_stale_at_drain"] is None
                  else f"{r['mirror_stale_at_drain']}/{r['mirror_clean_after_s']}s", r["seconds"]]
        terminalreporter.write_line(" ".join(f"{v!s:<{w}}" if i < 2 else f"{v!s:>{w}}"
                                             for i, (v, (_, w)) in enumerate(zip(values, columns, strict=True))))
