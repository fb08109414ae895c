"""The Redis the tests use, and redis-server processes owned by one test.

Discovery, once per session (STYLE §9), first that answers wins:

1. ``PGQ_TEST_REDIS_URL`` (if set but silent, the run stops: an explicit
   setting that does not work is an error, not a reason to fall back);
2. the server on 127.0.0.1:6379;
3. a throwaway ``redis-server`` started on a free port (no persistence), stopped
   at the end of the session.

Never a fake: every test that needs Redis talks to a real server, and if none
can be had those tests error with the reasons (nothing is skipped).

Tests share a server, so each one uses its own key prefix (``unique_prefix``)
and deletes its keys afterwards (``delete_prefix``); anything that must flush
or kill Redis (FLUSHALL, a restart) does it to an ``OwnedRedis``, a
redis-server process of its own. The chaos tests reuse ``OwnedRedis``.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import redis

from pgq.settings import Settings

ENV_URL = "PGQ_TEST_REDIS_URL"
LOCAL_URL = "redis://127.0.0.1:6379/0"


def answers(url: str, timeout: float = 1.0) -> bool:
    """True if a Redis at ``url`` answers PING within ``timeout`` seconds."""
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    found = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
    if found is None:
        raise NoRedis("redis-server is not installed (apt-get install redis-server), "
                      f"no Redis answers on 127.0.0.1:6379 and {ENV_URL} is not set")
    return found


class NoRedis(RuntimeError):
    """No Redis could be found or started for the tests."""


class OwnedRedis:
    """A redis-server process owned by the caller: start, kill -9, restart on the same port.

    No persistence (``--save ''``, no AOF): a restart comes back empty, like a
    crashed cache node, unless ``persistence=True`` (an RDB file kept in its
    temporary directory between restarts).
    """

    def __init__(self, *, persistence: bool = False, bind: tuple[str, ...] = ("127.0.0.1",), args: tuple[str, ...] = (),
                 url: str | None = None) -> None:
        self.binary = redis_server_binary()
        self.bind = bind  # the addresses it listens on (the first is the one ``url`` names)
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="pgq-redis-")
        self.persistence = persistence
        self.args = args  # more redis-server options (cluster, TLS, ACL users: tests/redis_topology.py)
        self._url = url  # how to reach it when it is not plain redis:// on self.port ("{port}" is filled in)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self._url.format(port=self.port) if self._url else f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> OwnedRedis:
        args = [self.binary, "--port", str(self.port), "--bind", *self.bind, "--dir", self.directory,
                "--appendonly", "no", "--protected-mode", "no", "--logfile", os.path.join(self.directory, "log")]
        args += ["--save", "3600 1"] if self.persistence else ["--save", ""]
        args += list(self.args)
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not answers(self.url, 0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise NoRedis(f"redis-server on port {self.port} did not start (exit code {self.process.poll()})")
            time.sleep(0.02)  # start-up poll of an external process
        return self

    def kill(self) -> None:
        """kill -9 (no shutdown save), and wait for the process to be gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    def client(self) -> Any:
        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=5)


@dataclass
class RedisService:
    """The session's Redis."""

    url: str
    source: str
    owned: OwnedRedis | None = None

    def describe(self) -> str:
        return f"pgq test Redis: {self.source}"

    def stop(self) -> None:
        if self.owned is not None:
            self.owned.stop()


def discover() -> RedisService:
    """The configured, local or a throwaway Redis (see the module docstring)."""
    url = os.environ.get(ENV_URL)
    if url:
        if not answers(url, 3.0):
            raise NoRedis(f"{ENV_URL} is set but {url} does not answer PING")
        return RedisService(url, f"{ENV_URL}={url}")
    if answers(LOCAL_URL):
        return RedisService(LOCAL_URL, "local server on 127.0.0.1:6379")
    owned = OwnedRedis().start()
    return RedisService(owned.url, f"throwaway redis-server on port {owned.port}", owned)


_prefixes = itertools.count(1)


def unique_prefix() -> str:
    """A key prefix no other test (of this run or a concurrent one) uses."""
    return f"pgqt-{socket.gethostname()[:12]}-{os.getpid()}-{next(_prefixes)}"


def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key of a prefix (all schemas) on ``url``."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match="{" + prefix + ":*", count=1000))
        for start in range(0, len(keys), 500):
            client.unlink(*keys[start:start + 500])
    except (redis.RedisError, OSError):
        pass  # an owned server killed by the test: nothing left to delete
    finally:
        client.close()


# ---------------------------------------------------------------- fixtures (imported by tests/conftest.py)


@pytest.fixture(scope="session")
def redis_service() -> Iterator[RedisService]:
    """The session's Redis (see the module docstring); an error, never a skip, if none."""
    try:
        service = discover()
    except NoRedis as exc:
        pytest.fail(str(exc), pytrace=False)
    yield service
    service.stop()


@pytest.fixture
def redis_url(redis_service: RedisService) -> str:
    return redis_service.url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix private to this test; its keys are deleted afterwards."""
    prefix = unique_prefix()
    yield prefix
    delete_prefix(redis_url, prefix)


@pytest.fixture
def queue_mode(request: pytest.FixtureRequest) -> str:
    """``postgres`` (the default) or ``redis``: modules marked ``both_modes`` run each test in both."""
    return str(getattr(request, "param", "postgres"))


def both_modes(metafunc: pytest.Metafunc) -> None:
    """``pytest_generate_tests`` hook: tests of modules marked ``both_modes`` that use
    ``settings`` run once Postgres-only and once with the Redis accelerator."""
    if "queue_mode" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_modes"):
        metafunc.parametrize("queue_mode", ["postgres", "redis"], indirect=True)


def accelerated(settings: Settings, url: str, prefix: str, **overrides: Any) -> Settings:
    """``settings`` with the Redis accelerator on, and the mirror built (as the
    reconciler leader of a running deployment would have done)."""
    from pgq.redis.client import RedisClient
    from pgq.redis.reconciler import Reconciler

    # The safety-net poll of Postgres is shortened like the other poll intervals of
    # the worker tests; the Redis tests that must prove Redis delivered set it long.
    accelerated = settings.replace(redis_url=url, redis_prefix=prefix, **{"redis_poll_interval_seconds": 1.0, **overrides})
    client = RedisClient(accelerated)
    try:
        with psycopg.connect(accelerated.require_database_url(), autocommit=True) as conn:
            Reconciler(accelerated, None, client).run_once(conn)  # type: ignore[arg-type]
    finally:
        client.close()
    return accelerated
