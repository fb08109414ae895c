"""LISTEN for new work and cancellations, on one dedicated connection per process.

``Listener`` runs in a thread: it LISTENs on the schema's channels and calls
back on every notification. When the connection drops it reconnects with
backoff, LISTENs again and calls ``on_reconnect`` so the worker polls to catch
up on what it missed. NOTIFY only wakes workers early; polling keeps
everything correct without it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from pgq.db import connect
from pgq.errors import ConfigurationError

log = logging.getLogger("pgq.notify")


class Listener:
    """A background LISTEN loop with automatic reconnection."""

    def __init__(
        self,
        url: str,
        channels: Sequence[str],
        on_notify: Callable[[str, str], None],
        on_reconnect: Callable[[], None],
        *,
        max_backoff_seconds: float = 5.0,
    ) -> None:
        self.url = url
        self.channels = list(channels)
        self.on_notify = on_notify
        self.on_reconnect = on_reconnect
        self.max_backoff_seconds = max_backoff_seconds
        self.connected = threading.Event()
        self.reconnects = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[Any] | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="pgq-listener", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def backend_pid(self) -> int | None:
        """The server process id of the LISTEN connection (for tests and diagnostics)."""
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    def _loop(self) -> None:
        backoff = 0.05
        first = True
        while not self._stop.is_set():
            try:
                with connect(self.url) as conn:
                    self._conn = conn
                    for channel in self.channels:
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self.connected.set()
                    if not first:
                        self.reconnects += 1
                        log.info("LISTEN connection restored; polling to catch up")
                    first = False
                    # Work may have arrived while we were not listening.
                    self.on_reconnect()
                    backoff = 0.05
                    while not self._stop.is_set():
                        # A short timeout bounds how long stop() waits (an idle
                        # loop turn costs microseconds; NOTIFY still wakes at once).
                        for note in conn.notifies(timeout=0.1):
                            self.on_notify(note.channel, note.payload)
            except (psycopg.Error, ConfigurationError) as exc:
                self.connected.clear()
                self._conn = None
                if self._stop.is_set():
                    break
                log.warning("LISTEN connection lost (%s); reconnecting in %.2f s", exc, backoff)
                self.on_reconnect()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_seconds)
        self.connected.clear()
        self._conn = None
