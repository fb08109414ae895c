"""The Redis client of the accelerator: every command pgq sends to Redis, behind a circuit breaker.

``RedisClient`` wraps two redis-py clients (one for blocking waits) for one
pgq schema: pushes and pops, the worker-side calls, and what the reconciler
and ``pgq status`` read. Every command is bounded by
``redis_timeout_seconds`` and goes through a ``CircuitBreaker``. The Lua
scripts live in ``scripts/*.lua`` and are read like ``db/`` SQL files. What
the ids mean and when to call what is decided by the claim source and the
reconciler; this module imports ``redis`` only when a client is created.

Every script reads and writes the keys of one queue (one Cluster slot: see the
key layout in ``pgq.redis``); what spans queues is several calls (``pop`` of
several queues, ``give_back``, ``retire``) or a pipeline of single-key
commands, which redis-py's Cluster client splits by node. The client is a
``redis.Redis``, a Sentinel master client or a ``RedisCluster`` (``topology``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Generator, Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pgq.clock import Clock
from pgq.errors import ConfigurationError, RedisUnavailable
from pgq.redis.breaker import CircuitBreaker
from pgq.redis.keys import BLOCK_SECONDS, PAGE, POPPED_AT_KEEP_MS, WAKE_CAP, Keys, batch_ids, score
from pgq.redis.topology import connect, parse_topology
from pgq.settings import Settings, redact_url, scrub

log = logging.getLogger("pgq.redis")

#: A client adds a queue it pushes to to the set of mirrored queues at most this often (seconds).
REGISTER_SECONDS = 10.0

T = TypeVar("T")

SCRIPTS = Path(__file__).resolve().parent / "scripts"


@cache
def _script_text(name: str) -> str:
    return (SCRIPTS / f"{name}.lua").read_text(encoding="utf-8")


def read_script(name: str, **constants: int) -> str:
    """The text of ``scripts/<name>.lua``, with each ``@NAME@`` placeholder replaced by
    ``constants[NAME]`` (so a Lua constant has one source: the Python one).

    Raises:
        ValueError: a placeholder was left without a value.
    """
    text = _script_text(name)
    for key, value in constants.items():
        text = text.replace(f"@{key}@", str(value))
    if "@" in "".join(line for line in text.splitlines() if not line.lstrip().startswith("--")):
        raise ValueError(f"scripts/{name}.lua has a placeholder without a value")
    return text


def offer_calls(keys: Keys, entries: Iterable[tuple[int, str, int]],
                popped_before: int) -> tuple[list[str], list[tuple[list[str], list[Any]]]]:
    """A push of ``(id, queue, priority)`` entries as calls of ``scripts/offer.lua``:
    the queues touched, and ``(keys, args)`` of each call (a page of ids each)."""
    by_queue: dict[str, list[int]] = defaultdict(list)
    for job_id, queue, priority in entries:
        by_queue[queue] += [score(job_id, priority), job_id]
    calls = [
        ([keys.ready(queue), keys.wake(queue), keys.popped_at(queue)],
         [WAKE_CAP, popped_before, *args[start:start + 2 * PAGE]])
        for queue, args in by_queue.items()
        for start in range(0, len(args), 2 * PAGE)
    ]
    return list(by_queue), calls


def registration_due(registered: dict[str, float], queues: Sequence[str], now: float) -> list[str]:
    """Those of ``queues`` this client has not added to the mirrored set in ``REGISTER_SECONDS``."""
    return [q for q in queues if now - registered.get(q, -REGISTER_SECONDS) >= REGISTER_SECONDS]


#: A pipeline of commands: ``(method name, args, kwargs)`` each.
Commands = list[tuple[str, tuple[Any, ...], dict[str, Any]]]


def registration(keys: Keys, due: Sequence[str]) -> Generator[Commands, list[Any], None]:
    """The pipelines that register ``due`` queues (see ``RedisClient.register``); each
    yields its commands and receives their replies."""
    added = yield [("sadd", (keys.queues, q), {}) for q in due]
    new = [q for q, was_added in zip(due, added, strict=True) if was_added]
    if new:
        yield [("set", (keys.built(q), "new"), {"nx": True}) for q in new]


class _Guarded(Protocol):
    """What ``guard``, ``failure`` and ``success`` need of a client (sync or async)."""

    url: str
    closed: bool
    breaker: CircuitBreaker
    settings: Settings
    _registered: dict[str, float]


def guard(client: _Guarded) -> None:
    """Raise ``RedisUnavailable`` at once when the client is closed or its breaker is open."""
    if client.closed:
        raise RedisUnavailable(f"Redis client for {client.url} is closed")
    if not client.breaker.allows():
        raise RedisUnavailable(f"Redis at {client.url} is unavailable (retrying shortly)")


def failure(client: _Guarded, what: str, exc: BaseException) -> RedisUnavailable:
    """Record a failed command (breaker, log once per outage); the error to raise."""
    client._registered.clear()  # Redis may come back empty: register the queues again
    if client.breaker.failed() and not client.closed:
        log.warning("Redis at %s unavailable (%s during %s); using the Postgres path until it answers",
                    client.url, scrub(str(exc), client.settings.redis_url), what)
    return RedisUnavailable(f"Redis at {client.url} failed during {what}: {scrub(str(exc), client.settings.redis_url)}")


def success(client: _Guarded) -> None:
    """Record a command that worked (log the recovery once)."""
    if client.breaker.down and client.breaker.succeeded():
        log.warning("Redis at %s answers again; using the accelerator", client.url)


def require_redis_url(settings: Settings) -> str:
    """``settings.redis_url``; ``ConfigurationError`` when unset."""
    if not settings.redis_url:
        raise ConfigurationError("the Redis accelerator needs PGQ_REDIS_URL (or redis_url=)")
    return settings.redis_url


def redis_errors() -> tuple[type[BaseException], ...]:
    """What a failed Redis command raises (redis-py's errors and socket errors)."""
    import redis

    return (redis.RedisError, OSError)


def open_redis(settings: Settings, *, asyncio: bool = False, name: str = "pgq", extra_timeout: float = 0.0,
               retries: int = 1) -> Any:
    """A redis-py client (``redis.asyncio`` with ``asyncio``) for ``settings.redis_url``, any topology.

    Commands time out after ``redis_timeout_seconds`` (+ ``extra_timeout`` for
    blocking ones). ``retries`` immediate retries on a connection error: after a
    Redis restart every pooled socket is dead, and the retry opens a fresh one.
    Never on a timeout (Retry's default errors include it): a hung Redis would
    double the bound.

    Raises:
        ConfigurationError: the ``redis`` package is missing or the URL is malformed.
    """
    url = require_redis_url(settings)
    try:
        import redis
        from redis.backoff import NoBackoff
        if asyncio:
            from redis.asyncio.retry import Retry
        else:
            from redis.retry import Retry  # type: ignore[assignment]
    except ImportError:
        raise ConfigurationError(
            "PGQ_REDIS_URL is set but the redis package is not installed: pip install 'pgq[redis]'"
        ) from None
    timeout = settings.redis_timeout_seconds
    try:
        return connect(parse_topology(url), asyncio=asyncio, socket_timeout=timeout + extra_timeout,
                       socket_connect_timeout=timeout,
                       retry=Retry(NoBackoff(), retries, supported_errors=(redis.ConnectionError,)),
                       retry_on_timeout=False, decode_responses=True, client_name=name)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"PGQ_REDIS_URL is not a valid Redis URL ({redact_url(url)}): {scrub(str(exc), url)}") from None


class RedisClient:
    """Talks to Redis for one pgq schema, with bounded timeouts and a circuit breaker.

    Every command is bounded by ``Settings.redis_timeout_seconds``. A failure
    raises ``RedisUnavailable`` and opens a short back-off (1 s, doubling up
    to 5 s) during which calls raise at once without touching the network, so
    callers fall back to Postgres immediately; an outage is logged once, and
    so is the recovery. Thread-safe (redis-py pools its connections).

    Raises:
        ConfigurationError: the ``redis`` package is missing or the URL is malformed.
    """

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings, self.keys, self.url = settings, Keys(settings.redis_prefix, settings.schema), redact_url(settings.redis_url) or ""
        self.topology = parse_topology(require_redis_url(settings))
        self._client: Any = open_redis(settings)
        self._blocking: Any = open_redis(settings, name="pgq-wait", extra_timeout=BLOCK_SECONDS, retries=0)
        self._errors = redis_errors()
        self._pop = self._client.register_script(read_script("pop", POPPED_AT_KEEP_MS=POPPED_AT_KEEP_MS))
        self._offer = self._client.register_script(read_script("offer"))
        self._retire = self._client.register_script(read_script("retire"))
        self._give_back = self._client.register_script(read_script("give_back"))
        self._finish_queue = self._client.register_script(read_script("finish_queue"))
        self._lease = self._client.register_script(read_script("lease"))
        self._finish_build = self._client.register_script(read_script("finish_build"))
        self._commit = self._client.register_script(read_script("commit"))
        self.breaker = CircuitBreaker(clock)
        self._registered: dict[str, float] = {}  # queue -> when this client last added it to P:queues
        self.closed = False

    def __repr__(self) -> str:
        return f"<pgq.redis.RedisClient {self.url} {self.keys.base}>"

    # ------------------------------------------------------------ circuit breaker
    @property
    def available(self) -> bool:
        """False during the back-off after a failure (calls would raise at once)."""
        return not self.closed and self.breaker.allows()

    @property
    def failures(self) -> int:
        """Redis failures since this client was created."""
        return self.breaker.failures

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        guard(self)
        try:
            result = fn()
        except self._errors as exc:
            raise failure(self, what, exc) from exc
        success(self)
        return result

    def close(self) -> None:
        """Close the connections (the object is unusable afterwards)."""
        self.closed = True
        for client in (self._client, self._blocking):
            try:
                client.close()
            except self._errors:
                pass

    # ------------------------------------------------------------ producers
    def push(self, entries: Iterable[tuple[int, str, int]], *, popped_before: int = 0) -> int:
        """Mirror runnable jobs given as ``(id, queue, priority)``; return how many were new.

        Idempotent: an id already in its ready set is not added again.
        ``popped_before`` (Redis time, ms; 0: no filter): leave out ids popped at or
        after it (the reconciler's offers; see ``scripts/offer.lua``).
        Raises ``RedisUnavailable``.
        """
        queues, offers = offer_calls(self.keys, entries, popped_before)
        if not offers:
            return 0

        def run() -> int:
            added = sum(int(self._offer(keys=keys, args=args)) for keys, args in offers)
            self.register(queues)
            return added

        return self._call("push", run)

    def register(self, queues: Sequence[str]) -> None:
        """Add ``queues`` to the set of mirrored queues (again every ``REGISTER_SECONDS``).
        A queue new to that set has nothing to lose: its ready set is marked built,
        so its workers use Redis from its first push. A known queue without the
        mark lost its data, and waits for the reconciler to rebuild it. Called by
        pushes and by workers (for their queues). Raises ``RedisUnavailable``."""
        now = time.monotonic()
        due = registration_due(self._registered, queues, now)
        if not due:
            return

        def run() -> None:
            steps = registration(self.keys, due)
            replies: Any = None
            with contextlib.suppress(StopIteration):
                while True:
                    pipe = self._client.pipeline(transaction=False)
                    for name, args, kwargs in steps.send(replies):
                        getattr(pipe, name)(*args, **kwargs)
                    replies = pipe.execute()

        self._call("register", run)
        self._registered.update((q, now) for q in due)

    def push_quietly(self, entries: Iterable[tuple[int, str, int]]) -> int:
        """``push``, but a Redis failure only logs: the reconciler mirrors the jobs later."""
        try:
            return self.push(entries)
        except RedisUnavailable as exc:
            log.debug("push skipped: %s", exc)
            return 0

    # ------------------------------------------------------------ workers
    def pop(self, worker: str, queues: Sequence[str], n: int, batch: str,
            claimed: Sequence[str] = (), ahead: int = 0) -> list[tuple[int, int, str]] | None:
        """Pop up to ``n`` ids in priority order, recorded as ``worker``'s batch ``batch``,
        after deleting its ``claimed`` batches (the same round trip for one queue).
        With one queue and a backlog of at least ``n + 2 * ahead`` ids, pops ``ahead`` more.

        Several queues live in several slots: one round trip reads the head of each
        (and deletes the claimed batches), then each queue with ids among the best
        ``n`` is popped by a script of its own (see ``scripts/pop.lua``).

        Returns ``[(id, score, queue), ...]``, or None when a queue's ready set is not
        built (after FLUSHALL, a restart or a lost node, until the reconciler rebuilds it).
        Raises ``RedisUnavailable`` (then nothing was popped).
        """
        if len(queues) == 1:
            return self._call("pop", lambda: self._pop_queue(worker, queues[0], n, batch, claimed, ahead))
        heads = self._call("pop", lambda: self._heads(worker, queues, n, claimed))
        if heads is None:
            return None
        want: dict[str, int] = defaultdict(int)
        for _, _, queue in sorted(heads)[:n]:
            want[queue] += 1
        popped: list[tuple[int, int, str]] = []
        for queue, count in want.items():
            got = self._call("pop", lambda q=queue, c=count: self._pop_queue(worker, q, c, batch, (), 0))  # type: ignore[misc]
            popped += got or []
        return sorted(popped, key=lambda e: (e[1], e[0]))

    def _pop_queue(self, worker: str, queue: str, n: int, batch: str, claimed: Sequence[str],
                   ahead: int) -> list[tuple[int, int, str]] | None:
        k = self.keys
        keys = [k.built(queue), k.owners(queue), k.popped(worker, queue), k.ready(queue), k.wake(queue),
                k.popped_at(queue)]
        reply = self._pop(keys=keys, args=[n, worker, batch, ahead, len(claimed), *claimed])
        if not reply or int(reply[0]) == 0:
            return None
        return [(int(reply[i]), int(float(reply[i + 1])), queue) for i in range(1, len(reply), 2)]

    def _heads(self, worker: str, queues: Sequence[str], n: int,
               claimed: Sequence[str]) -> list[tuple[int, int, str]] | None:
        """The first ``n`` (score, id, queue) of each queue, or None if one is not built."""
        pipe = self._client.pipeline(transaction=False)
        for q in queues:
            if claimed:
                pipe.hdel(self.keys.popped(worker, q), *claimed)
            pipe.exists(self.keys.built(q))
            pipe.zrange(self.keys.ready(q), 0, n - 1, withscores=True)
        replies = pipe.execute()
        if claimed:
            replies = [r for i, r in enumerate(replies) if i % 3]
        heads: list[tuple[int, int, str]] = []
        for q, built, items in zip(queues, replies[::2], replies[1::2], strict=True):
            if not built:
                return None
            heads += [(int(s), int(i), q) for i, s in items]
        return heads

    def forget_batches(self, worker: str, queues: Sequence[str], batches: Sequence[str]) -> None:
        """Delete popped batches of ``worker`` in ``queues`` (claimed, or given back by the reconciler)."""
        if not batches:
            return

        def run() -> None:
            pipe = self._client.pipeline(transaction=False)
            for q in queues:
                pipe.hdel(self.keys.popped(worker, q), *batches)
            pipe.execute()

        self._call("forget batches", run)

    def give_back(self, worker: str, queues: Sequence[str], batches: Sequence[str],
                  entries: Sequence[tuple[int, int, str]]) -> None:
        """Return popped ids that were not claimed (``(id, score, queue)``) to the ready
        sets, and delete the ``batches`` they were popped in (in each of ``queues``)."""
        k = self.keys
        by_queue: dict[str, list[int | str]] = {q: [] for q in queues}
        for job_id, job_score, queue in entries:
            by_queue.setdefault(queue, []).extend((job_score, job_id))

        def run() -> None:
            for queue, args in by_queue.items():
                self._give_back(keys=[k.popped(worker, queue), k.ready(queue), k.wake(queue)],
                                args=[len(batches), *batches, *args])

        self._call("give back", run)

    def forget(self, jobs: Iterable[tuple[int, str]]) -> None:
        """Remove ``(id, queue)`` from the ready sets (claimed through the Postgres path)."""
        by_queue: dict[str, list[str]] = defaultdict(list)
        for job_id, queue in jobs:
            by_queue[queue].append(str(job_id))
        if not by_queue:
            return

        def run() -> None:
            pipe = self._client.pipeline(transaction=False)
            for queue, ids in by_queue.items():
                pipe.zrem(self.keys.ready(queue), *ids)
            pipe.execute()

        self._call("forget", run)

    def retire(self, worker: str, queues: Sequence[str]) -> list[int]:
        """Delete ``worker``'s popped batches and wake lists in ``queues``, and its
        heartbeat; return the ids it held."""
        k = self.keys

        def run() -> list[str]:
            batches: list[str] = []
            for q in queues:
                batches += self._retire(keys=[k.popped(worker, q), k.owners(q), k.worker_wake(worker, q)],
                                        args=[worker])
            self._client.delete(k.heartbeat(worker))
            return batches

        return [job_id for value in self._call("retire", run) for job_id in batch_ids(value)]

    def heartbeat(self, worker: str, info: dict[str, Any]) -> None:
        """Write the worker's liveness key with a TTL of ``redis_heartbeat_ttl_seconds``."""
        ttl_ms = int(self.settings.redis_heartbeat_ttl_seconds * 1000)
        self._call("heartbeat", lambda: self._client.set(self.keys.heartbeat(worker), json.dumps(info), px=ttl_ms))

    def wait_for_work(self, worker: str, queues: Sequence[str], timeout: float = BLOCK_SECONDS,
                      turn: int = 0) -> bool:
        """Block until a wake-up token arrives for one of ``queues`` (True) or ``timeout``
        passes, or the wait is interrupted (False).

        On Redis Cluster one ``BLPOP`` reaches one slot: a worker of several queues
        takes any token waiting in them (one round trip), then blocks on the
        queue of its ``turn``. Raises ``RedisUnavailable`` (at once during the back-off).
        """
        k = self.keys
        if not self.topology.cluster or len(queues) == 1:
            keys = [*[k.wake(q) for q in queues], *[k.worker_wake(worker, q) for q in queues]]
            reply = self._call("wait", lambda: self._blocking.blpop(keys, timeout=timeout))
            return reply is not None and reply[0] in keys[:len(queues)]

        def poll() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for q in queues:
                pipe.lpop(k.wake(q))
            return list(pipe.execute())

        if any(self._call("wait", poll)):
            return True
        q = queues[turn % len(queues)]
        keys = [k.wake(q), k.worker_wake(worker, q)]
        reply = self._call("wait", lambda: self._blocking.blpop(keys, timeout=timeout / len(queues)))
        return reply is not None and reply[0] == keys[0]

    def interrupt_wait(self, worker: str, queues: Sequence[str]) -> None:
        """Make ``worker``'s blocking wait return now."""
        def run() -> None:
            pipe = self._client.pipeline(transaction=False)
            for q in queues:
                pipe.lpush(self.keys.worker_wake(worker, q), "1")
            pipe.execute()

        self._call("interrupt", run)

    # ------------------------------------------------------------ reconciler
    def time_ms(self) -> int:
        """Redis' clock, in milliseconds (the pop times in ``popped-at`` are on it;
        on Cluster, one node's clock: keep the nodes' clocks in step)."""
        reply = self._call("time", lambda: self._client.time())
        if isinstance(reply, dict):  # RedisCluster asks one node per call, or all of them
            reply = next(iter(reply.values()))
        seconds, micros = reply
        return int(seconds) * 1000 + int(micros) // 1000

    def state(self) -> dict[str, str]:
        """The mirror hash (empty when the mirror is not built)."""
        return dict(self._call("state", lambda: self._client.hgetall(self.keys.mirror)))

    def lead(self, owner: str, ttl_seconds: float) -> bool:
        """Take or extend the reconciler lease; True if ``owner`` holds it."""
        return bool(self._call("lease", lambda: self._lease(keys=[self.keys.lease], args=[owner, int(ttl_seconds * 1000)])))

    def begin_build(self, queues: Sequence[str] = (), *, whole: bool = True) -> str:
        """Start a rebuild: a token in each of ``queues``' slots, and in the mirror's
        slot for a ``whole`` rebuild."""
        token = uuid.uuid4().hex

        def run() -> None:
            pipe = self._client.pipeline(transaction=False)
            if whole:
                pipe.set(self.keys.building, token, ex=3600)
            for q in queues:
                pipe.set(self.keys.queue_building(q), token, ex=3600)
            pipe.execute()

        self._call("build", run)
        return token

    def finish_queues(self, token: str, queues: Sequence[str], epoch: str) -> list[str]:
        """Mark the ready sets of ``queues`` built where the rebuild's token survived;
        return those marked."""
        k = self.keys

        def run() -> list[str]:
            return [q for q in queues
                    if self._finish_queue(keys=[k.queue_building(q), k.built(q)], args=[token, epoch])]

        return self._call("build", run)

    def finish_build(self, token: str, horizon: str, now: str) -> str | None:
        """Publish the mirror hash if the rebuild's token survived; return its epoch (None if not)."""
        epoch = uuid.uuid4().hex
        keys = [self.keys.building, self.keys.mirror]
        args = [token, epoch, horizon, now, Keys.LAYOUT]
        return epoch if self._call("build", lambda: self._finish_build(keys=keys, args=args)) else None

    def unbuilt(self, queues: Sequence[str]) -> list[str]:
        """Those of ``queues`` whose ready set is not marked built (a node lost its data)."""
        def run() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for q in queues:
                pipe.exists(self.keys.built(q))
            return list(pipe.execute())

        return [q for q, built in zip(queues, self._call("built", run), strict=True) if not built]

    def delete_legacy(self) -> int:
        """Delete the keys of the layout before per-queue slots; return how many existed."""
        old_owners = f"{self.keys.base}:owners"

        def run() -> int:
            owners = sorted(self._client.smembers(old_owners))
            keys = self.keys.legacy(sorted(self._client.smembers(self.keys.queues)), owners)
            return sum(int(self._client.delete(key)) for key in keys)

        return self._call("legacy", run)

    def commit(self, epoch: str, horizon: str, now: str, *, full: bool) -> bool:
        args = [epoch, horizon, now, "1" if full else "0"]
        return bool(self._call("commit", lambda: self._commit(keys=[self.keys.mirror], args=args)))

    def owners(self, queue: str) -> list[str]:
        return sorted(self._call("owners", lambda: self._client.smembers(self.keys.owners(queue))))

    def beating(self, workers: Sequence[str]) -> set[str]:
        """Those of ``workers`` whose heartbeat key exists."""
        def run() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for w in workers:
                pipe.exists(self.keys.heartbeat(w))
            return list(pipe.execute())

        return {w for w, alive in zip(workers, self._call("heartbeats", run), strict=True) if alive}

    def popped_batches(self, queue: str, workers: Sequence[str]) -> dict[str, dict[str, tuple[int, list[int]]]]:
        """The popped batches of ``workers`` in ``queue``: worker -> {batch: (pop time ms, ids)}."""
        def run() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for w in workers:
                pipe.hgetall(self.keys.popped(w, queue))
            return list(pipe.execute())

        found = self._call("popped", run)
        return {w: {b: (int(v.split(" ", 1)[0]), batch_ids(v)) for b, v in batches.items()}
                for w, batches in zip(workers, found, strict=True)}

    def queues(self) -> list[str]:
        return sorted(self._call("queues", lambda: self._client.smembers(self.keys.queues)))

    def head(self, queue: str, count: int | None) -> list[int]:
        """The next ``count`` ids of a ready set (all of them for None)."""
        stop = -1 if count is None else count - 1
        return [int(i) for i in self._call("head", lambda: self._client.zrange(self.keys.ready(queue), 0, stop))]

    def remove(self, queue: str, job_ids: Sequence[int]) -> int:
        if not job_ids:
            return 0
        return int(self._call("remove", lambda: self._client.zrem(self.keys.ready(queue), *[str(i) for i in job_ids])))

    def sizes(self, queues: Sequence[str]) -> dict[str, int]:
        """Ids per ready set."""
        def run() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for q in queues:
                pipe.zcard(self.keys.ready(q))
            return list(pipe.execute())

        return {q: int(n) for q, n in zip(queues, self._call("sizes", run), strict=True)}

    def counts(self) -> tuple[int, int]:
        """(ids popped and not claimed yet, workers with a live heartbeat key)."""
        held = sum(len(ids) for q in self.queues() for batches in self.popped_batches(q, self.owners(q)).values()
                   for _, ids in batches.values())

        def run() -> int:
            return sum(1 for _ in self._client.scan_iter(match=self.keys.heartbeat("*"), count=1000))

        return held, self._call("counts", run)
