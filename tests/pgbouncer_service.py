"""A real PgBouncer in transaction-pooling mode, owned by one test.

``OwnedPgBouncer(server_url)`` writes its own configuration (a free port on
127.0.0.1, every database forwarded to the test server, ``pool_mode =
transaction``, a small server pool so that clients share server connections),
starts ``pgbouncer`` in the foreground and stops it when the ``with`` block
ends, on failure too. The binary must be installed (``apt-get install
pgbouncer``; ``.ci/run`` does it): a missing one is an error saying so, never
a skip. PgBouncer refuses to run as root, so under root it runs as the
``postgres`` OS user (or ``nobody``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

INSTALL_HINT = (
    "the PgBouncer tests need the pgbouncer binary: install it with `apt-get update && apt-get install -y pgbouncer` "
    "(Debian/Ubuntu; .ci/run does this) or put pgbouncer on the PATH"
)


def pgbouncer_binary() -> str:
    """The pgbouncer executable, or an error that says how to install it."""
    found = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None)
    if found is None:
        raise RuntimeError(INSTALL_HINT)
    return found


def pgbouncer_version() -> tuple[int, ...]:
    out = subprocess.run([pgbouncer_binary(), "--version"], capture_output=True, text=True, timeout=30).stdout
    first = out.split()[1] if len(out.split()) > 1 else "0"
    return tuple(int(p) for p in first.split(".") if p.isdigit())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnedPgBouncer:
    """A pgbouncer process in transaction mode in front of the server of ``server_url``."""

    def __init__(self, server_url: str, *, pool_size: int = 2, max_client_conn: int = 200) -> None:
        params = conninfo_to_dict(server_url)
        self.server_host = str(params.get("host") or "127.0.0.1")
        self.server_port = int(params.get("port") or 5432)
        self.user = str(params.get("user") or pwd.getpwuid(os.getuid()).pw_name)
        self.password = params.get("password")
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pgq-pgbouncer-"))
        self.process: subprocess.Popen[str] | None = None

    # ------------------------------------------------------------ URLs
    def url(self, direct_url: str) -> str:
        """``direct_url`` (a database on the test server) rewritten to go through this PgBouncer."""
        params = conninfo_to_dict(direct_url)
        params.update(host="127.0.0.1", port=str(self.port))
        return make_conninfo("", **params)

    # ------------------------------------------------------------ process
    def start(self) -> None:
        binary = pgbouncer_binary()
        run_as = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                with contextlib.suppress(KeyError):
                    pwd.getpwnam(name)
                    run_as = name
                    break
        users = self.root / "users.txt"
        secret = str(self.password or "").replace('"', '""')
        users.write_text(f'"{self.user}" "{secret}"\n')
        config = self.root / "pgbouncer.ini"
        config.write_text("\n".join([
            "[databases]",
            f"* = host={self.server_host} port={self.server_port}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"admin_users = {self.user}",
            f"auth_file = {users}",
            "pool_mode = transaction",
            f"default_pool_size = {self.pool_size}",
            "min_pool_size = 0",
            "reserve_pool_size = 0",
            f"max_client_conn = {self.max_client_conn}",
            "server_reset_query =",
            "logfile =",
            "pidfile =",
            "log_connections = 0",
            "log_disconnections = 0",
            "",
        ]))
        os.chmod(self.root, 0o755)
        for path in (users, config):
            os.chmod(path, 0o644)
        args = [binary, *(["-u", run_as] if run_as else []), str(config)]
        self.log = self.root / "pgbouncer.log"
        with self.log.open("w") as log:  # a file, not a pipe: a full pipe would block pgbouncer
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, text=True,
                                            start_new_session=True)
        deadline = time.monotonic() + 30
        while True:  # wait for its listening socket (polling a process we just started)
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited at start ({self.process.returncode}): {self.output()}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer did not listen on port {self.port} within 30 s: {self.output()}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # SIGINT: safe shutdown (closes every connection)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def output(self) -> str:
        """The tail of pgbouncer's log."""
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except (AttributeError, OSError):
            return ""

    def show(self, what: str, direct_url: str) -> list[dict[str, Any]]:
        """``SHOW <what>`` on PgBouncer's admin console (e.g. ``pools``)."""
        params = conninfo_to_dict(self.url(direct_url))
        params["dbname"] = "pgbouncer"
        with psycopg.connect(make_conninfo("", **params), autocommit=True, prepare_threshold=None) as admin:
            cur = admin.execute(f"SHOW {what}")
            names = [d.name for d in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def __enter__(self) -> OwnedPgBouncer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
