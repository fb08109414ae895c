"""The pytest plugin of ``pgq.testing`` (entry point ``pytest11``: ``pgq``; ``-p no:pgq`` turns it off).

Fixtures, all named ``pgq_*``: ``pgq_server`` (the discovered server, once
per session), ``pgq_template`` (a database migrated once per session),
``pgq_db_url`` (a fresh clone of it per test, dropped after), ``pgq_settings``,
``pgq_queue`` (a ``pgq.Queue`` on the clone: the application's queue named by
the ``pgq_app`` ini option, else an empty one) and ``pgq_clock``.

Configuration: the server's admin URL from ``--pgq-database-url``, else
``PGQ_TEST_DATABASE_URL``, else the ``pgq_database_url`` ini option, else the
local server, a container or the embedded server (``pgq.testing.databases``).
Nothing is discovered or started unless a collected test uses a ``pgq_*``
database fixture, and a server that cannot be had is an error, never a skip.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgq.errors import ConfigurationError
from pgq.queue import Queue
from pgq.settings import TEST_DATABASE_URL_VARIABLE, Settings, environment_for_tests
from pgq.testing import use_database
from pgq.testing.clock import QueueClock
from pgq.testing.databases import (
    ClonePool,
    CloneTimes,
    NoServer,
    PgServer,
    create_template,
    drop_database,
    drop_leftovers,
    find_running,
    start_throwaway,
)

_SERVER = pytest.StashKey[PgServer]()
_NO_SERVER = pytest.StashKey[str]()
_TIMES = pytest.StashKey[CloneTimes]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pgq", "pgq test databases (pgq.testing)")
    group.addoption("--pgq-database-url", default=None,
                    help=f"admin URL of the PostgreSQL for the pgq_* fixtures (a role allowed to CREATE DATABASE); "
                         f"default {TEST_DATABASE_URL_VARIABLE}, then the pgq_database_url ini option, then the "
                         "local server, a container or the embedded server")
    parser.addini("pgq_database_url", "admin URL of the PostgreSQL for the pgq_* fixtures", default="")
    parser.addini("pgq_schema", "the pgq schema the template is migrated in (default pgq)", default="pgq")
    parser.addini("pgq_app", "MODULE:ATTRIBUTE of the application's pgq.Queue that pgq_queue points at the "
                  "test's database (default: an empty queue)", default="")
    parser.addini("pgq_clone_threads", "clones made ahead in background threads (default 2)", default="2")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_TIMES] = CloneTimes()


def _configured(config: pytest.Config) -> tuple[str | None, str, str]:
    """(the admin URL the user configured or None, where it came from, the Docker engine's address)."""
    env_url, docker_host = environment_for_tests()
    option = config.getoption("pgq_database_url")
    if option:
        return option, "--pgq-database-url", docker_host
    if env_url:
        return env_url, TEST_DATABASE_URL_VARIABLE, docker_host
    ini = str(config.getini("pgq_database_url"))
    if ini:
        return ini, "the pgq_database_url ini option", docker_host
    return None, TEST_DATABASE_URL_VARIABLE, docker_host


def session_server(config: pytest.Config) -> PgServer:
    """The run's server: found (and started, if need be) once.

    Raises:
        NoServer: none could be found or started (the same error for every later call).
        ConfigurationError: the configured URL does not answer.
    """
    if _NO_SERVER in config.stash:
        raise NoServer(config.stash[_NO_SERVER])
    if _SERVER not in config.stash:
        url, how, docker_host = _configured(config)
        server, tried = find_running(url, how)
        try:
            config.stash[_SERVER] = server if server is not None else start_throwaway(tried, docker_host, how)
        except NoServer as exc:
            config.stash[_NO_SERVER] = str(exc)
            raise
    return config.stash[_SERVER]


def _needs_server(items: list[pytest.Item]) -> bool:
    return any("pgq_server" in getattr(item, "fixturenames", ()) for item in items)


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> str | None:
    # Only now is it known whether a test needs a database: a run that needs none starts nothing.
    if not _needs_server(items):
        return None
    try:
        return session_server(config).describe()
    except NoServer:
        return "pgq test database: NONE AVAILABLE; every test that needs one will error (reason below)"
    except ConfigurationError as exc:
        # An explicit setting that does not work is an error of the run, not a reason to fall back.
        raise pytest.UsageError(str(exc)) from None


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    server = config.stash.get(_SERVER, None)
    line = config.stash[_TIMES].summary(server) if server is not None and _TIMES in config.stash else None
    if line:
        terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    server = config.stash.get(_SERVER, None)
    if server is not None and server.stop is not None:
        server.stop()


@pytest.fixture(scope="session")
def pgq_server(pytestconfig: pytest.Config) -> PgServer:
    """The PostgreSQL the pgq_* fixtures create databases on (see the module docstring)."""
    try:
        return session_server(pytestconfig)
    except ConfigurationError as exc:
        reason = str(exc)
    # An error, not a skip: green must mean the database tests really ran.
    pytest.fail(reason, pytrace=False)


@pytest.fixture(scope="session")
def pgq_template(pgq_server: PgServer, pytestconfig: pytest.Config) -> Iterator[str]:
    """Name of a database migrated to head once per session (schema: the ``pgq_schema`` ini option)."""
    schema = str(pytestconfig.getini("pgq_schema")) or "pgq"
    with psycopg.connect(pgq_server.admin_url, autocommit=True) as admin:
        drop_leftovers(admin)
        name = create_template(admin, pgq_server, schema)
        try:
            yield name
        finally:
            drop_database(admin, name)


@pytest.fixture(scope="session")
def pgq_clone_pool(pgq_template: str, pgq_server: PgServer, pytestconfig: pytest.Config) -> Iterator[ClonePool]:
    """Clones of the template made ahead (``pgq_clone_threads`` at a time)."""
    raw = str(pytestconfig.getini("pgq_clone_threads"))
    try:
        threads = int(raw)
    except ValueError:
        raise pytest.UsageError(f"pgq_clone_threads must be a whole number from 1 to 32, got {raw!r}") from None
    pool = ClonePool(pgq_server, pgq_template, pytestconfig.stash[_TIMES], threads)
    yield pool
    pool.close()


@pytest.fixture
def pgq_db_url(pgq_clone_pool: ClonePool, pgq_server: PgServer) -> Iterator[str]:
    """URL of a fresh database migrated to head, private to this test (dropped after it)."""
    name = pgq_clone_pool.take()
    yield pgq_server.url_for(name)
    pgq_clone_pool.give_back(name)


@pytest.fixture
def pgq_settings(pgq_db_url: str, pytestconfig: pytest.Config) -> Settings:
    """``pgq.Settings`` for ``pgq_db_url`` (no Redis, no Qdrant)."""
    return Settings(database_url=pgq_db_url, schema=str(pytestconfig.getini("pgq_schema")) or "pgq")


def load_app(spec: str) -> Queue:
    """The ``pgq.Queue`` named by ``MODULE:ATTRIBUTE``.

    Raises:
        ConfigurationError: not of that form, not importable, or not a ``pgq.Queue``.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"pgq_app must be MODULE:ATTRIBUTE, e.g. myapp.tasks:q, got {spec!r}")
    try:
        target = getattr(importlib.import_module(module_name), attribute, None)
    except ImportError as exc:
        raise ConfigurationError(f"pgq_app: cannot import {module_name!r}: {exc}") from None
    if not isinstance(target, Queue):
        raise ConfigurationError(f"pgq_app: {spec!r} is not a pgq.Queue")
    return target


@pytest.fixture
def pgq_queue(pgq_settings: Settings, pytestconfig: pytest.Config) -> Iterator[Queue]:
    """A ``pgq.Queue`` on this test's database: the ``pgq_app`` ini option's queue (its tasks
    registered), pointed at the database for the test; else an empty queue to register tasks on."""
    app = str(pytestconfig.getini("pgq_app"))
    if not app:
        with Queue(pgq_settings) as queue:
            yield queue
        return
    application = load_app(app)
    if application.settings.schema != pgq_settings.schema:
        raise ConfigurationError(f"pgq_app's queue uses schema {application.settings.schema!r} but the test "
                                 f"databases are migrated in {pgq_settings.schema!r}: set the pgq_schema ini option")
    with use_database(application, pgq_settings.require_database_url()) as queue:
        yield queue


@pytest.fixture
def pgq_clock(pgq_queue: Queue) -> QueueClock:
    """The clock of ``pgq_queue``'s database: ``pgq_clock.advance(3600)`` lets an hour pass."""
    return QueueClock(pgq_queue)
