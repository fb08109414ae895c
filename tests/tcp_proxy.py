"""A TCP proxy between pgq and Postgres that cuts connections at a chosen point.

``CuttingProxy(host, port)`` listens on a free port of 127.0.0.1 and forwards
every connection to the server. A test arms one cut at a time:

- ``cut_before(marker)``: the next client message containing ``marker`` (bytes
  of the statement, e.g. ``b"INSERT INTO"``) is dropped and both sides are
  closed: the server never sees it;
- ``cut_reply_after(marker)``: that message is forwarded, the server's reply to
  it is dropped and both sides are closed: the server ran it, the client never
  hears back;
- ``cut_all()``: close every open connection now (the server "went away"
  while the client's connection was idle).

``delay_seconds`` (0 by default) holds every chunk that long in each direction,
so a round trip through the proxy costs twice that more: ``python
tests/tcp_proxy.py --target 127.0.0.1:5432 --delay-ms 2.5`` runs one as a
process of its own (for a bench with 5 ms to the database; it prints its port).

``cuts`` records what was cut, so a test can check that its cut happened.
``CuttingProxy(host, port, delay_ms=d)`` also delays every chunk by ``d`` ms in
each direction (a round trip of ``2 d`` ms more): a database far away, where the
kernel has no ``netem`` qdisc (bench/distance.py runs it as ``python
tests/tcp_proxy.py --delay-ms D --target HOST:PORT --port P``).
Connections opened after a cut are forwarded normally. Markers are matched
within one read (psycopg writes a message whole; messages here are small).
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType


@dataclass
class _Pair:
    client: socket.socket
    server: socket.socket
    # Set once a "reply after" cut forwarded its message: the next server bytes are dropped.
    drop_reply: threading.Event = field(default_factory=threading.Event)
    # With a delay: the delay lines that send each way, in order, ``delay`` after the bytes arrived.
    to_server: _DelayLine | None = None
    to_client: _DelayLine | None = None

    def close(self) -> None:
        for line in (self.to_server, self.to_client):
            if line is not None:
                line.chunks.put(None)  # its thread ends
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class _DelayLine:
    """Sends the chunks put into it to ``sock``, each ``delay`` seconds after it arrived, in order."""

    def __init__(self, sock: socket.socket, delay: float, pair: _Pair) -> None:
        self.sock, self.delay, self.pair = sock, delay, pair
        self.chunks: queue.Queue[tuple[float, bytes] | None] = queue.Queue()
        threading.Thread(target=self._send, daemon=True).start()

    def put(self, data: bytes) -> None:
        self.chunks.put((time.monotonic() + self.delay, data))

    def _send(self) -> None:
        while (item := self.chunks.get()) is not None:
            due, data = item
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # the injected delay itself
            try:
                self.sock.sendall(data)
            except OSError:
                self.pair.close()
                return


class CuttingProxy:
    def __init__(self, host: str, port: int, *, delay_ms: float = 0.0, listen_port: int = 0) -> None:
        self.target = (host, port)
        self.delay = delay_ms / 1000.0
        self._listener = socket.create_server(("127.0.0.1", listen_port))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._rule: tuple[str, bytes] | None = None
        self.cuts: list[str] = []
        self.delay_seconds = 0.0
        self.reply_dropped = threading.Event()
        # Called (in the proxy's thread) when a reply is dropped, before the client sees the cut.
        self.on_reply_dropped: Callable[[], None] | None = None
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []

    def url(self, direct_url: str) -> str:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(direct_url)
        params.update(host="127.0.0.1", port=str(self.port))
        return make_conninfo("", **params)

    # ------------------------------------------------------------ arming cuts
    def cut_before(self, marker: bytes) -> None:
        with self._lock:
            self._rule = ("before", marker)

    def cut_reply_after(self, marker: bytes) -> None:
        with self._lock:
            self._rule = ("reply", marker)

    def cut_all(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            pair.close()
        self.cuts.append(f"all ({len(pairs)} connection(s))")

    # ------------------------------------------------------------ forwarding
    def start(self) -> None:
        self._spawn(self._accept)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(client, server)
            if self.delay:
                pair.to_server, pair.to_client = _DelayLine(server, self.delay, pair), _DelayLine(client, self.delay, pair)
            with self._lock:
                self._pairs.append(pair)
            self._spawn(self._client_to_server, pair)
            self._spawn(self._server_to_client, pair)

    def _client_to_server(self, pair: _Pair) -> None:
        while True:
            try:
                data = pair.client.recv(65536)
            except OSError:
                data = b""
            if not data:
                pair.close()
                return
            with self._lock:
                rule = self._rule
                hit = rule is not None and rule[1] in data
                if hit:
                    self._rule = None
            if hit and rule is not None and rule[0] == "before":
                self.cuts.append(f"before {rule[1]!r}")
                pair.close()
                return
            if hit:
                pair.drop_reply.set()
            if pair.to_server is not None:
                pair.to_server.put(data)
                continue
            try:
                pair.server.sendall(data)
            except OSError:
                pair.close()
                return

    def _server_to_client(self, pair: _Pair) -> None:
        while True:
            try:
                data = pair.server.recv(65536)
            except OSError:
                data = b""
            if not data:
                pair.close()
                return
            if pair.drop_reply.is_set():
                self.cuts.append("reply dropped")
                if self.on_reply_dropped is not None:
                    self.on_reply_dropped()
                self.reply_dropped.set()
                pair.close()
                return
            if pair.to_client is not None:
                pair.to_client.put(data)
                continue
            try:
                pair.client.sendall(data)
            except OSError:
                pair.close()
                return

    def _hold(self) -> None:
        if self.delay_seconds:
            time.sleep(self.delay_seconds)  # the injected network delay itself

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            pair.close()

    def __enter__(self) -> CuttingProxy:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def main() -> None:
    """Run a delaying proxy until killed: ``--target HOST:PORT --port P --delay-ms D``."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--target", default="127.0.0.1:5432")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="added in each direction")
    args = parser.parse_args()
    host, port = args.target.rsplit(":", 1)
    proxy = CuttingProxy(host, int(port), delay_ms=args.delay_ms, listen_port=args.port)
    proxy.start()
    print(f"proxy 127.0.0.1:{proxy.port} -> {args.target}, +{args.delay_ms} ms each way", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
