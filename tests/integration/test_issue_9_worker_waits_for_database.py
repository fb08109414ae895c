"""Issue 9, defect 8 (first item), for workers embedded in a service: ``Worker.run()``
waits for an unreachable database like ``pgq worker`` does (up to
``start_timeout_seconds``, with backoff), then raises the typed
``pgq.DatabaseUnavailable`` (not a configuration error). Before, only the CLI
waited: an embedded worker failed at once on its first connection."""

from __future__ import annotations

import logging
import socket
import time

import pytest

import pgq

pytestmark = pytest.mark.integration


def _unused_port() -> int:
    """A local port where nothing listens (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_worker_run_waits_for_an_unreachable_database_then_raises_database_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{_unused_port()}/postgres"
    settings = pgq.Settings(database_url=url, start_timeout_seconds=0.5)
    q = pgq.Queue(settings, strict_tasks=False)
    worker = q.worker(queues=["default"], install_signal_handlers=False, run_maintenance=False)
    caplog.set_level(logging.WARNING, logger="pgq")
    began = time.monotonic()
    try:
        with pytest.raises(pgq.DatabaseUnavailable, match=r"gave up waiting .* after [2-9] attempt\(s\) in 0.5 s"):
            worker.run()
    finally:
        q.close()
    assert time.monotonic() - began >= 0.5  # it waited, with backoff (0.1 s, 0.2 s, ...), for the timeout
    assert [r.getMessage() for r in caplog.records if "not reachable yet" in r.getMessage()]
    assert worker.in_flight == 0 and worker.counters.claim_round_trips == 0
