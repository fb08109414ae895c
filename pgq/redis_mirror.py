"""Optional Redis accelerator: runnable job ids mirrored in Redis, popped by
workers, claimed in Postgres, reconciled from Postgres.

Redis never decides anything. It holds *suggestions*: ids that were runnable
when they were written. A worker pops ids (atomically recording them as a
batch of its own), then claims them with ``pgq.claim_jobs``, which applies the
fence of ``get_runnable_jobs``; ids Postgres no longer considers runnable are
dropped. Every Redis structure can be rebuilt from Postgres, and every Redis
failure sends the caller down the Postgres path (``get_runnable_jobs``).
This module imports ``redis`` lazily; core modules import it only when
``redis_url`` is set.

Key layout (``P`` = ``{<redis_prefix>:<schema>}``; the braces are a Redis
Cluster hash tag, so one deployment's keys share a slot and scripts may touch
them together)::

    P:ready:<queue>        sorted set: runnable ids; score = (5 - priority) * 2**50 + id
    P:wake:<queue>         list: wake-up tokens for idle workers (capped)
    P:popped:<worker>      hash: pop number -> "<pop time ms> <id> <id> ...": the batches a
                           worker popped and has not claimed yet (usually none or one)
    P:owners               set: workers that may have popped batches
    P:popped-at            sorted set: id -> when it was last popped (ms), for the last 10 s
    P:heartbeat:<worker>   string with a TTL: cheap liveness (Postgres heartbeats stay authoritative)
    P:wake-worker:<worker> list: interrupts one worker's blocking wait (shutdown)
    P:queues               set: queues ever mirrored (for status and stale checks)
    P:mirror               hash: epoch, horizon, reconciled_at, full_at; exists only once a
                           full rebuild completed; absent after FLUSHALL or a restart
    P:building, P:reconciler   rebuild token, reconciler lease

Why one sorted set per queue rather than three lists (high/medium/low):
ZADD is idempotent, so a duplicate push, a re-mirrored id or a retried write
is harmless (a list would hold the id twice and run a claim for each copy);
a stale id is removed in O(log n) by value; the five priorities keep their
full order instead of being folded into three bands; and the score (priority
first, then id, i.e. enqueue order) is an exact integer below 2**53, so the
order is the same on every node and needs no clock. Postgres orders a
priority by run_at then id; Redis orders it by id, so a retried or delayed job
that falls due goes ahead of younger jobs of its priority.

Acquisition is a Lua script: pop up to N ids in priority order across the
worker's queues and record them as one field of the worker's ``popped`` hash.
A batch lives from the pop to the claim: once ``claim_jobs`` answered, a
claimed job is ``running`` in Postgres (whose rescue covers a crash from then
on) and a dropped one is not runnable, so the worker deletes the batch with
its next pop, in the same round trip (or on its own once it goes quiet). A
busy worker therefore makes one Redis round trip per claim batch and none per
acknowledgement, and Redis does constant work per batch beside the pop
itself; when the queue is deep it also pops ahead what it will claim in the
next ``AHEAD_SECONDS`` (see ``WorkerMirror``), so it pops about once per two
or more claims. The reconciler reads runnable jobs from a snapshot while
workers pop them: an offer leaves out the ids popped since the page was read
(``popped-at``), or a large window read during a burn-down would put back a
quarter of what the workers had taken, for their claims to drop. An id popped
before the read and not claimed yet may be offered again; the second pop of it
is dropped by its claim. Ids a worker popped and never claimed (it died,
or could not give them back) return to the ready sets once Postgres says the
worker is gone, or once the batch is ``ABANDONED_MS`` old.
Scripts cannot block, so idle workers block on ``BLPOP`` of the per-queue
wake lists instead: a push adds a token, and a pop that leaves ids behind adds
another, so wake-ups cascade to as many idle workers as there is work without
waking all of them per job. An idle worker therefore costs Postgres nothing
but its heartbeat and a safety-net poll every ``redis_poll_interval_seconds``.

Reconciliation costs what changed, not the table size. Every stored function
that makes a job runnable (enqueue, retry, rescue, release, requeue) sets its
``run_at`` to its transaction's ``now()`` or later. ``mirror_horizon()`` is the
start of the oldest transaction open in the database; a pass mirrors the
runnable jobs with ``run_at`` at or after the previous pass's horizon (an
index range scan per queue and priority) and then stores its own horizon. A
job made runnable by a transaction that commits late, after a failed push,
while Redis was down, by a transactional enqueue (which is not pushed: there
is no after-commit hook) or by another language calling the SQL functions,
is therefore seen by the next pass. The reconciler leader also runs a pass
when a ``NOTIFY`` says a queue got work. A missing ``P:mirror`` hash
(FLUSHALL, a restart without persistence) makes the next pass rebuild
everything once; until it completes, workers take the Postgres path. Stale
ids at the head of each ready set are removed when Postgres says they are
not runnable, and a full sweep every
``redis_full_sweep_interval_seconds`` catches what no watermark sees (a DBA's
UPDATE).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import itertools
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pgq.clock import Clock, SystemClock
from pgq.errors import ConfigurationError, RedisUnavailable
from pgq.queries import MirrorQueries
from pgq.settings import Settings, redact_url

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from pgq.job import Job
    from pgq.worker import WorkerCounters

log = logging.getLogger("pgq.redis")

T = TypeVar("T")

#: Scores: (5 - priority) * PRIORITY_SPAN + id, exact in a double for ids below 2**50.
PRIORITY_SPAN = 2**50
#: Wake-up tokens kept per queue (each wakes one idle worker).
WAKE_CAP = 64
#: How long an idle worker blocks in BLPOP before looking again (seconds).
BLOCK_SECONDS = 1.0
#: Rows per page when the reconciler reads runnable jobs.
PAGE = 5000
#: Ids checked at the head of each ready set per pass.
HEAD_CHECK = 100
#: The reconciler looks back at most this far (seconds) for late commits; an older
#: open transaction's late writes are caught by the full sweep.
MAX_LOOKBACK_SECONDS = 300.0
#: A batch popped this long ago (ms) and never claimed was abandoned: its ids go back.
ABANDONED_MS = 30_000
#: Claimed batches wait at most this long (seconds) for a pop to delete them; then an
#: acknowledgement deletes them on its own.
RESOLVED_FLUSH_SECONDS = 0.1
#: Most claimed batches a worker remembers while Redis cannot be reached.
MAX_RESOLVED = 10_000
#: A busy worker pops ahead what it claims in about this long (seconds) at its rate.
AHEAD_SECONDS = 0.05
#: How long (ms) Redis remembers when an id was last popped: longer than one page of
#: the reconciler's window scan (its query and its offer).
POPPED_AT_KEEP_MS = 10_000


def score(job_id: int, priority: int) -> int:
    """The ready-set score of a job: priority 5 first, then by id (enqueue order)."""
    return (5 - priority) * PRIORITY_SPAN + min(job_id, PRIORITY_SPAN - 1)


class Keys:
    """Redis key names of one deployment (prefix and schema)."""

    def __init__(self, prefix: str, schema: str) -> None:
        self.base = "{" + f"{prefix}:{schema}" + "}"
        self.owners = f"{self.base}:owners"
        self.queues = f"{self.base}:queues"
        self.mirror = f"{self.base}:mirror"
        self.building = f"{self.base}:building"
        self.lease = f"{self.base}:reconciler"
        self.popped_at = f"{self.base}:popped-at"

    def ready(self, queue: str) -> str:
        return f"{self.base}:ready:{queue}"

    def wake(self, queue: str) -> str:
        return f"{self.base}:wake:{queue}"

    def popped(self, worker: str) -> str:
        return f"{self.base}:popped:{worker}"

    def heartbeat(self, worker: str) -> str:
        return f"{self.base}:heartbeat:{worker}"

    def worker_wake(self, worker: str) -> str:
        return f"{self.base}:wake-worker:{worker}"


# ---------------------------------------------------------------- Lua scripts
# Lua's unpack() and a command's arguments are bounded: scripts pass long lists
# to Redis in chunks of CHUNK (a plain Lua constant below).
#
# KEYS: mirror, owners, popped, ready_1..k, wake_1..k, popped-at
# ARGV: n, worker, k, pop number, ahead, r, claimed pop number_1..r
# Deletes the r claimed batches first (ids popped earlier and since claimed in
# Postgres or dropped), then pops up to n ids in priority order, and (one queue
# only) up to ``ahead`` more when at least twice that many would remain, and
# records them as batch <pop number> and their pop time in popped-at (trimmed
# to the last POPPED_AT_KEEP_MS). Returns {0} when the mirror is not built
# (use Postgres), else {1, id, score, ...} for one queue and {1, id, score,
# queue index, ...} for several.
_POP = """
local CHUNK = 1000
local POPPED_AT_KEEP_MS = @KEEP@
local n = tonumber(ARGV[1])
local k = tonumber(ARGV[3])
local ahead = tonumber(ARGV[5])
local r = tonumber(ARGV[6])
for i = 7, 6 + r, CHUNK do
  redis.call('HDEL', KEYS[3], unpack(ARGV, i, math.min(i + CHUNK - 1, 6 + r)))
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local out, ids = {1}, {}
if k == 1 then
  if ahead > 0 and redis.call('ZCARD', KEYS[4]) >= n + 2 * ahead then n = n + ahead end
  local items = redis.call('ZPOPMIN', KEYS[4], n)
  for j = 1, #items, 2 do
    ids[#ids + 1] = items[j]
    out[#out + 1] = items[j]
    out[#out + 1] = items[j + 1]
  end
else
  local cands = {}
  for i = 1, k do
    local items = redis.call('ZRANGE', KEYS[3 + i], 0, n - 1, 'WITHSCORES')
    for j = 1, #items, 2 do
      cands[#cands + 1] = {tonumber(items[j + 1]), items[j], items[j + 1], i}
    end
  end
  table.sort(cands, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  for idx = 1, math.min(n, #cands) do
    local c = cands[idx]
    redis.call('ZREM', KEYS[3 + c[4]], c[2])
    ids[#ids + 1] = c[2]
    out[#out + 1] = c[2]
    out[#out + 1] = c[3]
    out[#out + 1] = c[4]
  end
end
if #ids > 0 then
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local now = string.format('%.0f', ms)
  redis.call('HSET', KEYS[3], ARGV[4], now .. ' ' .. table.concat(ids, ' '))
  redis.call('SADD', KEYS[2], ARGV[2])
  local zargs = {}
  for _, id in ipairs(ids) do
    zargs[#zargs + 1] = now
    zargs[#zargs + 1] = id
  end
  for i = 1, #zargs, 2 * CHUNK do
    redis.call('ZADD', KEYS[#KEYS], unpack(zargs, i, math.min(i + 2 * CHUNK - 1, #zargs)))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[#KEYS], '-inf', string.format('(%.0f', ms - POPPED_AT_KEEP_MS))
end
-- Ids left behind: leave a wake-up token for the next idle worker (the cascade).
-- One is enough; if tokens are waiting already, nobody is blocked to take another.
for i = 1, k do
  if redis.call('EXISTS', KEYS[3 + i]) == 1 and redis.call('LLEN', KEYS[3 + k + i]) == 0 then
    redis.call('LPUSH', KEYS[3 + k + i], '1')
  end
end
return out
""".replace("@KEEP@", str(POPPED_AT_KEEP_MS))

# KEYS: queues, ready, wake, popped-at
# ARGV: queue, wake cap, cutoff ms, score_1, id_1, score_2, id_2, ...
# Adds the ids not in the ready set yet (ZADD NX: a duplicate changes nothing) and
# a wake-up token per id added (capped). With a cutoff (> 0), an id popped at or
# after the cutoff is left out: the reconciler read it as runnable from a snapshot
# taken after the cutoff, and a worker has taken it since. Returns how many were added.
_OFFER = """
local CHUNK = 1000
local cutoff = tonumber(ARGV[3])
local added = 0
for i = 4, #ARGV, 2 * CHUNK do
  local last = math.min(i + 2 * CHUNK - 1, #ARGV)
  if cutoff > 0 then
    local ids = {}
    for j = i + 1, last, 2 do ids[#ids + 1] = ARGV[j] end
    local popped = redis.call('ZMSCORE', KEYS[4], unpack(ids))
    local zargs = {}
    for j = 1, #ids do
      if not popped[j] or tonumber(popped[j]) < cutoff then
        zargs[#zargs + 1] = ARGV[i + 2 * (j - 1)]
        zargs[#zargs + 1] = ids[j]
      end
    end
    if #zargs > 0 then added = added + redis.call('ZADD', KEYS[2], 'NX', unpack(zargs)) end
  else
    added = added + redis.call('ZADD', KEYS[2], 'NX', unpack(ARGV, i, last))
  end
end
redis.call('SADD', KEYS[1], ARGV[1])
if added > 0 then
  local tokens = {}
  for _ = 1, math.min(added, tonumber(ARGV[2])) do tokens[#tokens + 1] = '1' end
  redis.call('LPUSH', KEYS[3], unpack(tokens))
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[2]) - 1)
end
return added
"""

# KEYS: popped, owners, heartbeat, worker wake; ARGV: worker
# Deletes a worker's batches (shutdown, or a dead worker); returns them.
_RETIRE = """
local batches = redis.call('HVALS', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4])
redis.call('SREM', KEYS[2], ARGV[1])
return batches
"""

# KEYS: lease; ARGV: owner, ttl ms. Take or extend the reconciler lease.
_LEASE = """
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
elseif cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: building, mirror; ARGV: token, epoch, horizon, now
# Publishes a completed rebuild, unless Redis lost the build token meanwhile
# (FLUSHALL or restart during the rebuild: the mirror would be incomplete).
_FINISH_BUILD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2], KEYS[1])
redis.call('HSET', KEYS[2], 'epoch', ARGV[2], 'horizon', ARGV[3], 'reconciled_at', ARGV[4],
           'full_at', ARGV[4], 'built_at', ARGV[4])
return 1
"""

# KEYS: mirror; ARGV: epoch, horizon, now, full ('1' or '0')
# Records a pass, only on the mirror it started on (not on one rebuilt or flushed meanwhile).
_COMMIT = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'horizon', ARGV[2], 'reconciled_at', ARGV[3])
if ARGV[4] == '1' then redis.call('HSET', KEYS[1], 'full_at', ARGV[3]) end
return 1
"""


class RedisMirror:
    """Talks to Redis for one pgq schema, with bounded timeouts and a circuit breaker.

    Every command is bounded by ``Settings.redis_timeout_seconds``. A failure
    raises ``RedisUnavailable`` and opens a short back-off (1 s, doubling up
    to 5 s) during which calls raise at once without touching the network, so
    callers fall back to Postgres immediately; an outage is logged once, and
    so is the recovery. Thread-safe (redis-py pools its connections).

    Raises:
        ConfigurationError: the ``redis`` package is missing or the URL is malformed.
    """

    def __init__(self, settings: Settings) -> None:
        if not settings.redis_url:
            raise ConfigurationError("the Redis accelerator needs PGQ_REDIS_URL (or redis_url=)")
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise ConfigurationError(
                "PGQ_REDIS_URL is set but the redis package is not installed: pip install 'pgq[redis]'"
            ) from None
        self.settings = settings
        self.keys = Keys(settings.redis_prefix, settings.schema)
        self.url = redact_url(settings.redis_url) or ""
        timeout = settings.redis_timeout_seconds
        try:
            # One immediate retry on a connection error: after a Redis restart every
            # pooled socket is dead, and the retry opens a fresh one. Not on a timeout
            # (Retry's default errors include it): a hung Redis would double the bound.
            self._client: Any = redis.Redis.from_url(
                settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)), retry_on_timeout=False,
                decode_responses=True,
                client_name="pgq",
            )
            self._blocking: Any = redis.Redis.from_url(
                settings.redis_url, socket_timeout=timeout + BLOCK_SECONDS, socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0), retry_on_timeout=False, decode_responses=True,
                client_name="pgq-wait",
            )
        except ValueError as exc:
            raise ConfigurationError(f"PGQ_REDIS_URL is not a valid Redis URL ({self.url}): {exc}") from None
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._pop = self._client.register_script(_POP)
        self._offer = self._client.register_script(_OFFER)
        self._retire = self._client.register_script(_RETIRE)
        self._lease = self._client.register_script(_LEASE)
        self._finish_build = self._client.register_script(_FINISH_BUILD)
        self._commit = self._client.register_script(_COMMIT)
        self._state_lock = threading.Lock()
        self._down_until = 0.0
        self._backoff = 1.0
        self._down = False
        self.failures = 0
        self.closed = False

    def __repr__(self) -> str:
        return f"<pgq.RedisMirror {self.url} {self.keys.base}>"

    # ------------------------------------------------------------ circuit breaker
    @property
    def available(self) -> bool:
        """False during the back-off after a failure (calls would raise at once)."""
        return not self.closed and time.monotonic() >= self._down_until

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        if self.closed:
            raise RedisUnavailable(f"Redis client for {self.url} is closed")
        if time.monotonic() < self._down_until:
            raise RedisUnavailable(f"Redis at {self.url} is unavailable (retrying shortly)")
        try:
            result = fn()
        except self._errors as exc:
            self._failed(what, exc)
            raise RedisUnavailable(f"Redis at {self.url} failed during {what}: {exc}") from exc
        if self._down:
            with self._state_lock:
                if self._down:
                    self._down = False
                    self._backoff = 1.0
                    log.warning("Redis at %s answers again; using the accelerator", self.url)
        return result

    def _failed(self, what: str, exc: BaseException) -> None:
        with self._state_lock:
            self.failures += 1
            self._down_until = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, 5.0)
            first = not self._down
            self._down = True
        if first and not self.closed:
            log.warning("Redis at %s unavailable (%s during %s); using the Postgres path until it answers",
                        self.url, exc, what)

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
        after it (the reconciler's offers; see ``_OFFER``).
        Raises ``RedisUnavailable``.
        """
        by_queue: dict[str, list[int]] = defaultdict(list)
        for job_id, queue, priority in entries:
            by_queue[queue] += [score(job_id, priority), job_id]
        if not by_queue:
            return 0
        k = self.keys

        def run() -> int:
            added = 0
            for queue, args in by_queue.items():
                for start in range(0, len(args), 2 * PAGE):
                    added += int(self._offer(
                        keys=[k.queues, k.ready(queue), k.wake(queue), k.popped_at],
                        args=[queue, WAKE_CAP, popped_before, *args[start:start + 2 * PAGE]],
                    ))
            return added

        return self._call("push", run)

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
        after deleting its ``claimed`` batches (the same round trip). With one queue
        and a backlog of at least ``n + 2 * ahead`` ids, pops ``ahead`` more.

        Returns ``[(id, score, queue), ...]``, or None when the mirror is not built
        (after FLUSHALL or a restart, until the reconciler rebuilds it).
        Raises ``RedisUnavailable`` (then nothing was deleted or popped).
        """
        k = self.keys
        keys = [k.mirror, k.owners, k.popped(worker), *[k.ready(q) for q in queues], *[k.wake(q) for q in queues],
                k.popped_at]
        args: list[str | int] = [n, worker, len(queues), batch, ahead, len(claimed), *claimed]
        reply = self._call("pop", lambda: self._pop(keys=keys, args=args))
        if not reply or int(reply[0]) == 0:
            return None
        if len(queues) == 1:
            only = queues[0]
            return [(int(reply[i]), int(float(reply[i + 1])), only) for i in range(1, len(reply), 2)]
        return [(int(reply[i]), int(float(reply[i + 1])), queues[int(reply[i + 2]) - 1])
                for i in range(1, len(reply), 3)]

    def forget_batches(self, worker: str, batches: Sequence[str]) -> None:
        """Delete popped batches of ``worker`` (claimed, or given back by the reconciler)."""
        if batches:
            self._call("forget batches", lambda: self._client.hdel(self.keys.popped(worker), *batches))

    def give_back(self, worker: str, batches: Sequence[str], entries: Sequence[tuple[int, int, str]]) -> None:
        """Return popped ids that were not claimed (``(id, score, queue)``) to the ready
        sets, and delete the ``batches`` they were popped in."""
        k = self.keys
        by_queue: dict[str, dict[str, int]] = defaultdict(dict)
        for job_id, job_score, queue in entries:
            by_queue[queue][str(job_id)] = job_score

        def run() -> None:
            pipe = self._client.pipeline(transaction=True)
            if batches:
                pipe.hdel(k.popped(worker), *batches)
            for queue, members in by_queue.items():
                pipe.zadd(k.ready(queue), members)
                pipe.lpush(k.wake(queue), "1")
            pipe.execute()

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

    def retire(self, worker: str) -> list[int]:
        """Delete ``worker``'s popped batches, heartbeat and wake list; return the ids it held."""
        k = self.keys
        keys = [k.popped(worker), k.owners, k.heartbeat(worker), k.worker_wake(worker)]
        batches = self._call("retire", lambda: self._retire(keys=keys, args=[worker]))
        return [job_id for value in batches for job_id in _batch_ids(value)]

    def heartbeat(self, worker: str, info: dict[str, Any]) -> None:
        """Write the worker's liveness key with a TTL of ``redis_heartbeat_ttl_seconds``."""
        ttl_ms = int(self.settings.redis_heartbeat_ttl_seconds * 1000)
        self._call("heartbeat", lambda: self._client.set(self.keys.heartbeat(worker), json.dumps(info), px=ttl_ms))

    def wait_for_work(self, worker: str, queues: Sequence[str], timeout: float = BLOCK_SECONDS) -> bool:
        """Block until a wake-up token arrives for one of ``queues`` (True) or ``timeout`` passes.

        Raises ``RedisUnavailable`` (at once during the back-off).
        """
        keys = [*[self.keys.wake(q) for q in queues], self.keys.worker_wake(worker)]
        reply = self._call("wait", lambda: self._blocking.blpop(keys, timeout=timeout))
        return reply is not None and reply[0] != self.keys.worker_wake(worker)

    def interrupt_wait(self, worker: str) -> None:
        """Make ``worker``'s blocking wait return now."""
        self._call("interrupt", lambda: self._client.lpush(self.keys.worker_wake(worker), "1"))

    # ------------------------------------------------------------ reconciler
    def time_ms(self) -> int:
        """Redis' clock, in milliseconds (the pop times in ``popped-at`` are on it)."""
        seconds, micros = self._call("time", lambda: self._client.time())
        return int(seconds) * 1000 + int(micros) // 1000

    def state(self) -> dict[str, str]:
        """The mirror hash (empty when the mirror is not built)."""
        return dict(self._call("state", lambda: self._client.hgetall(self.keys.mirror)))

    def lead(self, owner: str, ttl_seconds: float) -> bool:
        """Take or extend the reconciler lease; True if ``owner`` holds it."""
        return bool(self._call("lease", lambda: self._lease(keys=[self.keys.lease], args=[owner, int(ttl_seconds * 1000)])))

    def begin_build(self) -> str:
        token = uuid.uuid4().hex
        self._call("build", lambda: self._client.set(self.keys.building, token, ex=3600))
        return token

    def finish_build(self, token: str, horizon: str, now: str) -> bool:
        epoch = uuid.uuid4().hex
        keys = [self.keys.building, self.keys.mirror]
        return bool(self._call("build", lambda: self._finish_build(keys=keys, args=[token, epoch, horizon, now])))

    def commit(self, epoch: str, horizon: str, now: str, *, full: bool) -> bool:
        args = [epoch, horizon, now, "1" if full else "0"]
        return bool(self._call("commit", lambda: self._commit(keys=[self.keys.mirror], args=args)))

    def owners(self) -> list[str]:
        return sorted(self._call("owners", lambda: self._client.smembers(self.keys.owners)))

    def beating(self, workers: Sequence[str]) -> set[str]:
        """Those of ``workers`` whose heartbeat key exists."""
        def run() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for w in workers:
                pipe.exists(self.keys.heartbeat(w))
            return list(pipe.execute())

        return {w for w, alive in zip(workers, self._call("heartbeats", run), strict=True) if alive}

    def popped_batches(self, workers: Sequence[str]) -> dict[str, dict[str, tuple[int, list[int]]]]:
        """The popped batches of ``workers``: worker -> {batch: (pop time ms, ids)}."""
        def run() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for w in workers:
                pipe.hgetall(self.keys.popped(w))
            return list(pipe.execute())

        found = self._call("popped", run)
        return {w: {b: (int(v.split(" ", 1)[0]), _batch_ids(v)) for b, v in batches.items()}
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
        held = sum(len(ids) for batches in self.popped_batches(self.owners()).values()
                   for _, ids in batches.values())

        def run() -> int:
            return sum(1 for _ in self._client.scan_iter(match=self.keys.heartbeat("*"), count=1000))

        return held, self._call("counts", run)


def _batch_ids(value: str) -> list[int]:
    """The ids of a popped batch as stored: "<pop time ms> <id> <id> ..."."""
    return [int(i) for i in value.split()[1:]]


# ---------------------------------------------------------------- worker side


class WorkerMirror:
    """One worker's use of the accelerator: pop, claim in Postgres, finish, heartbeat.

    ``claim`` answers None whenever the worker should take the Postgres path
    instead: Redis unavailable, the mirror not built, or Redis empty while a
    safety-net poll of Postgres is due.

    A popped batch is deleted from Redis once claimed (see the module
    docstring): by the next pop, in the same round trip, so a busy worker
    makes one Redis call per claim batch. A worker that goes quiet deletes its
    claimed batches on its own: when it holds no job any more, when they have
    waited ``RESOLVED_FLUSH_SECONDS``, and before it blocks waiting for work.

    A busy worker also pops ahead: as many more ids as it claims in about
    ``AHEAD_SECONDS`` at its measured rate (at most ``claim_batch_size``),
    when the queue has a backlog of twice that; its next claims take them
    without a pop. This is the Postgres path's prefetch, for ids: while the
    queue is deep a worker pops about once per ``AHEAD_SECONDS`` of work
    rather than once per claim. The ids stay recorded in Redis until claimed
    (a crash gives them back), and the backlog rule leaves other workers
    plenty to take meanwhile.
    """

    def __init__(self, mirror: RedisMirror, worker_id: uuid.UUID, queues: Sequence[str],
                 counters: WorkerCounters, clock: Clock | None = None) -> None:
        self.mirror = mirror
        self.clock = clock or SystemClock()
        self.worker = str(worker_id)
        self.worker_id = worker_id
        self.queues = list(queues)
        self.queries = MirrorQueries(mirror.settings.schema)
        self.counters = counters
        self.poll_every = mirror.settings.redis_poll_interval_seconds
        self._next_poll = self.clock.monotonic() + self.poll_every
        # Redis answered and the mirror is built: waits may rely on Redis wake-ups.
        self.trusted = False
        self._batches = itertools.count(1)
        # Guards the collections below. Redis calls are made outside it: every
        # batch has a number of its own, so a deletion and a pop never touch the
        # same entry, and no thread waits for another's round trip.
        self._lock = threading.Lock()
        # Claimed batches still to delete from Redis, and since when some wait.
        self._claimed: list[str] = []
        self._claimed_since = 0.0
        # Jobs this worker claimed and has not finished: at shutdown the released
        # and interrupted ones among them go back to Redis at once.
        self._held: set[int] = set()
        # Ids popped ahead and not claimed yet, and the batch they belong to.
        self._reserve: list[tuple[int, int, str]] = []
        self._reserve_batch = ""
        # Jobs claimed per second through Redis (sizes the pops ahead).
        self._rate = 0.0
        self._last_claim = 0.0

    def _count(self, name: str, n: int = 1) -> None:
        self.counters.extra[name] = self.counters.extra.get(name, 0) + n

    def seconds_to_poll(self) -> float:
        """Seconds until the next safety-net poll of Postgres."""
        return max(0.0, self._next_poll - self.clock.monotonic())

    def claim(self, pool: ConnectionPool, n: int, *, thorough: bool = False) -> list[Job] | None:
        """Claim up to ``n`` jobs from ids popped ahead, then popped now; None: take
        the Postgres path now.

        ``thorough``: when Redis has nothing, ask Postgres at once (``run_once``, burst mode).
        Raises what the database raises (the ids taken are given back first).
        """
        got: list[Job] = []
        for _ in range(4):
            want = n - len(got)
            take, done = self._take_reserve(want)
            short = False  # Redis has no more (or cannot be asked): claim what we hold and stop
            if len(take) < want:
                popped, batch = self._pop(want - len(take))
                if popped is None:
                    if not take and not got:
                        return None
                    short = True
                else:
                    short = len(popped) < want - len(take)
                    rest = popped[want - len(take):]
                    take += popped[:want - len(take)]
                    if rest:
                        with self._lock:
                            self._reserve, self._reserve_batch = rest, batch
                    elif popped:
                        done.append(batch)
            if not take:
                if got:
                    return got
                if thorough or self.clock.monotonic() >= self._next_poll:
                    self._next_poll = self.clock.monotonic() + self.poll_every
                    self._count("redis_safety_polls")
                    return None
                return []
            got += self._claim_taken(pool, take, done)
            if len(got) >= n or short:
                return got
            # Some ids were stale: there may be good ones behind them.
        return got

    def _take_reserve(self, want: int) -> tuple[list[tuple[int, int, str]], list[str]]:
        """Up to ``want`` ids popped ahead, and the batch they emptied (if they did)."""
        with self._lock:
            take, self._reserve = self._reserve[:want], self._reserve[want:]
            done = [self._reserve_batch] if take and not self._reserve else []
        return take, done

    def _pop(self, count: int) -> tuple[list[tuple[int, int, str]] | None, str]:
        """Pop ``count`` ids (and ids ahead), deleting claimed batches on the way;
        None when Redis cannot be used now."""
        batch = str(next(self._batches))
        # What this worker claims in AHEAD_SECONDS, like the prefetch of the Postgres
        # path: the next claims take it without a pop.
        ahead = min(self.mirror.settings.claim_batch_size, round(self._rate * AHEAD_SECONDS)) \
            if len(self.queues) == 1 else 0
        self._count("redis_pops")
        claimed = self._take_claimed()
        try:
            popped = self.mirror.pop(self.worker, self.queues, count, batch, claimed, ahead)
        except RedisUnavailable:
            self._keep_claimed(claimed)
            self.trusted = False
            self._count("redis_unavailable")
            return None, batch
        if popped is None:
            self.trusted = False
            self._count("redis_not_built")
            return None, batch
        self.trusted = True
        return popped, batch

    def _claim_taken(self, pool: ConnectionPool, take: list[tuple[int, int, str]], done: list[str]) -> list[Job]:
        """Claim ``take`` in Postgres; ``done``: batches this empties (deleted afterwards)."""
        ids = [job_id for job_id, _, _ in take]
        self._count("redis_popped", len(ids))
        try:
            with pool.connection() as conn:
                self.counters.claim_round_trips += 1
                jobs = self.queries.claim_jobs(conn, ids, self.worker_id)
        except BaseException:
            # Not claimed (database error, worker not active): put the ids back as
            # they were, with those popped ahead; stale ones are dropped by whoever
            # pops them next.
            with self._lock:
                reserve, self._reserve = self._reserve, []
                batches = [*done, self._reserve_batch] if reserve else done
            try:
                self.mirror.give_back(self.worker, batches, take + reserve)
            except RedisUnavailable as exc:  # left in Redis: see retire and the reconciler
                log.debug("could not give back popped ids: %s", exc)
            raise
        dropped = len(ids) - len(jobs)
        if dropped:
            self._count("redis_dropped", dropped)
        self._count("redis_claimed", len(jobs))
        now = self.clock.monotonic()
        with self._lock:
            self._held.update(job.id for job in jobs)
            if self._last_claim:
                rate = len(jobs) / max(now - self._last_claim, 1e-3)
                self._rate = rate if self._rate == 0.0 else 0.7 * self._rate + 0.3 * rate
            self._last_claim = now
        self._keep_claimed(done)
        return jobs

    def _take_claimed(self) -> list[str]:
        with self._lock:
            claimed, self._claimed = self._claimed, []
        return claimed

    def _keep_claimed(self, batches: Sequence[str]) -> None:
        """Remember batches to delete from Redis."""
        if not batches:
            return
        with self._lock:
            if not self._claimed:
                self._claimed_since = self.clock.monotonic()
            self._claimed.extend(batches)
            # Redis unreachable for long: forget the oldest (retire, or the reconciler
            # for a dead worker, deletes them in Redis; an old one is only given back).
            del self._claimed[:-MAX_RESOLVED]

    def forget_claimed(self) -> None:
        """Delete the claimed batches from Redis now (errors only log)."""
        claimed = self._take_claimed()
        if not claimed:
            return
        try:
            self.mirror.forget_batches(self.worker, claimed)
        except RedisUnavailable as exc:
            self._keep_claimed(claimed)
            log.debug("popped batches not deleted: %s", exc)

    def claimed_from_postgres(self, jobs: Sequence[Job]) -> None:
        """Jobs claimed through the Postgres path: remove their ids from the ready sets."""
        if not jobs:
            return
        with self._lock:
            self._held.update(job.id for job in jobs)
        if self.trusted:
            try:
                self.mirror.forget((job.id, job.queue) for job in jobs)
            except RedisUnavailable:
                self.trusted = False

    def finished(self, job_ids: Sequence[int]) -> None:
        """This worker is done with these jobs (their outcome is about to be written,
        or there is none to write). No Redis call while the worker stays busy: its
        batches are deleted by its next pop."""
        with self._lock:
            self._held.difference_update(job_ids)
            due = bool(self._claimed) and (
                not self._held or self.clock.monotonic() - self._claimed_since >= RESOLVED_FLUSH_SECONDS)
        if due:
            # Quiet now, and the next pop may be far off: delete the batches at once,
            # so that Redis shows what this worker really holds (``pgq status``) and
            # no claimed batch lingers until it looks abandoned.
            self.forget_claimed()

    def heartbeat(self, load: int) -> None:
        info = {"hostname": socket.gethostname(), "pid": os.getpid(), "queues": self.queues, "load": load}
        try:
            self.mirror.heartbeat(self.worker, info)
        except RedisUnavailable as exc:
            log.debug("Redis heartbeat skipped: %s", exc)

    def wait_for_work(self, timeout: float = BLOCK_SECONDS) -> bool | None:
        """Block on the wake lists; True on a token, False on timeout, None if Redis is unavailable.

        Claimed batches are deleted first: an idle worker pops nothing that would."""
        self.forget_claimed()
        try:
            return self.mirror.wait_for_work(self.worker, self.queues, timeout)
        except RedisUnavailable:
            self.trusted = False
            return None

    def interrupt_wait(self) -> None:
        try:
            self.mirror.interrupt_wait(self.worker)
        except RedisUnavailable:
            pass

    def retire(self, pool: ConnectionPool) -> None:
        """At shutdown: delete this worker's popped batches; their ids, and the jobs it
        claimed and did not finish (released, interrupted), go back to Redis if runnable."""
        with self._lock:
            held, self._held = self._held, set()
            self._claimed = []
            self._reserve = []
        try:
            ids = sorted(set(self.mirror.retire(self.worker)) | held)
            if ids:
                with pool.connection() as conn:
                    entries = self.queries.runnable_entries(conn, ids)
                self.mirror.push(entries)
        except RedisUnavailable as exc:
            log.info("could not retire from Redis (%s); the reconciler cleans up", exc)
        except Exception as exc:
            log.warning("could not give back this worker's Redis ids (%s); the reconciler cleans up", exc)


# ---------------------------------------------------------------- reconciler


@dataclass(frozen=True)
class ReconcileReport:
    """What one reconcile pass did."""

    rebuilt: bool = False
    full: bool = False
    offered: int = 0
    added: int = 0
    abandoned: int = 0  # ids of batches popped long ago and never claimed, looked at again
    reclaimed_workers: list[str] = field(default_factory=list)
    removed: int = 0
    committed: bool = False
    horizon: dt.datetime | None = None


class MirrorReconciler:
    """Keeps the Redis mirror in step with Postgres; run by one leader at a time.

    ``run_once()`` is one pass: a rebuild when the mirror is missing, otherwise
    the window of what became runnable since the last pass's horizon, the
    batches of dead workers and abandoned batches, and stale ids at the head
    of each ready set (all of it for a full sweep). Concurrent passes are
    safe (every write is idempotent, every watermark a pass stores is backed
    by its own scan); the lease only avoids duplicate work.
    """

    def __init__(self, settings: Settings, pool: ConnectionPool, mirror: RedisMirror) -> None:
        self.settings = settings
        self.pool = pool
        self.mirror = mirror
        self.queries = MirrorQueries(settings.schema)
        self.is_leader = False
        self._owner: str | None = None

    def lead(self, owner: str) -> bool:
        """Take or extend the lease for ``owner``; False when another process holds it."""
        ttl = max(10.0, 5 * self.settings.redis_reconcile_interval_seconds)
        try:
            self.is_leader = self.mirror.lead(owner, ttl)
        except RedisUnavailable:
            self.is_leader = False
        self._owner = owner if self.is_leader else None
        return self.is_leader

    def run_once(self, conn: Any = None, *, full: bool = False, quick: bool = False) -> ReconcileReport:
        """One pass (writes nothing in Postgres; reads only).

        Args:
            conn: an autocommit psycopg connection to use instead of the pool.
            full: compare every mirrored id with Postgres (also done every
                ``redis_full_sweep_interval_seconds``).
            quick: only the window of newly runnable jobs (a NOTIFY-triggered pass).
        Raises:
            RedisUnavailable, DatabaseError.
        """
        from pgq.db import translated

        with translated(self.settings.database_url):
            if conn is not None:
                return self._pass(conn, full, quick)
            with self.pool.connection() as pooled:
                return self._pass(pooled, full, quick)

    def _pass(self, conn: Any, full: bool, quick: bool) -> ReconcileReport:
        state = self.mirror.state()
        if not state.get("epoch"):
            return self._rebuild(conn)
        # The horizon is read first, in a statement of its own: whatever commits
        # after the window scan's snapshot started after this horizon or was open then.
        horizon, now = self.queries.horizon(conn)
        horizon = max(horizon, now - dt.timedelta(seconds=MAX_LOOKBACK_SECONDS))
        full = full or (not quick and _age(state.get("full_at"), now) >= self.settings.redis_full_sweep_interval_seconds)
        since = dt.datetime.fromisoformat(state["horizon"])
        offered, added = self._offer_window(conn, "-infinity" if full else since)
        reclaimed: list[str] = []
        abandoned = removed = 0
        if not quick:
            reclaimed, abandoned = self._reclaim_popped(conn)
            removed = self._remove_stale(conn, None if full else HEAD_CHECK)
        committed = self.mirror.commit(state["epoch"], horizon.isoformat(), now.isoformat(), full=full)
        report = ReconcileReport(False, full, offered, added, abandoned, reclaimed, removed, committed, horizon)
        if added or reclaimed or removed:
            log.info("mirror reconciled: %d id(s) added, %d stale removed, %d dead worker(s) cleaned",
                     added, removed, len(reclaimed))
        return report

    def _rebuild(self, conn: Any) -> ReconcileReport:
        token = self.mirror.begin_build()
        horizon, now = self.queries.horizon(conn)
        offered, added = self._offer_window(conn, "-infinity")
        reclaimed, _ = self._reclaim_popped(conn)
        built = self.mirror.finish_build(token, horizon.isoformat(), now.isoformat())
        if built:
            log.log(logging.WARNING if offered else logging.INFO,
                    "Redis mirror built from Postgres: %d runnable job(s)", offered)
        else:
            log.warning("Redis lost its data during the mirror rebuild; the next pass starts over")
        return ReconcileReport(True, True, offered, added, 0, reclaimed, 0, built, horizon)

    def _offer_window(self, conn: Any, after: dt.datetime | str) -> tuple[int, int]:
        """Mirror every runnable, due job after ``after`` (paged); return (seen, added)."""
        after_id = 0
        seen = added = 0
        while True:
            # Rows runnable in the page's snapshot that a worker popped since are
            # taken: leave them out, or the worker who pops them next drops them.
            cutoff = self.mirror.time_ms()
            rows = self.queries.runnable_after(conn, after, after_id, PAGE)
            if rows:
                seen += len(rows)
                added += self.mirror.push(((i, q, p) for i, q, p, _ in rows), popped_before=cutoff)
                after, after_id = rows[-1][3], rows[-1][0]
                if self._owner is not None:
                    self.lead(self._owner)  # a long rebuild keeps its lease
            if len(rows) < PAGE:
                return seen, added

    def _reclaim_popped(self, conn: Any) -> tuple[list[str], int]:
        """Ids popped and never claimed go back to the ready sets (those Postgres still
        calls runnable): every batch of a worker Postgres says is gone, and batches
        of live workers popped ``ABANDONED_MS`` ago (they could not give them back).
        Returns (dead workers cleaned, ids of abandoned batches looked at)."""
        owners = self.mirror.owners()
        if not owners:
            return [], 0
        beating = self.mirror.beating(owners)
        suspects = [w for w in owners if w not in beating]
        dead: list[str] = []
        if suspects:
            ids = []
            for w in suspects:
                try:
                    ids.append(uuid.UUID(w))
                except ValueError:
                    continue
            live = {str(u) for u in self.queries.live_workers(conn, ids)}
            dead = [w for w in suspects if w not in live]
        for worker in dead:
            held = self.mirror.retire(worker)
            if held:
                self.mirror.push(self.queries.runnable_entries(conn, held))
        if dead:
            log.info("mirror: gave back the popped ids of %d dead worker(s)", len(dead))
        now_ms = self.mirror.time_ms()  # pop times are on Redis' clock
        old = {w: {b: ids for b, (popped_ms, ids) in batches.items() if now_ms - popped_ms >= ABANDONED_MS}
               for w, batches in self.mirror.popped_batches([w for w in owners if w not in dead]).items()}
        look = [i for batches in old.values() for ids in batches.values() for i in ids]
        if look:
            self.mirror.push(self.queries.runnable_entries(conn, look))
            for worker, batches in old.items():
                self.mirror.forget_batches(worker, list(batches))
            log.info("mirror: gave back %d id(s) of batches popped %d s ago and never claimed",
                     len(look), ABANDONED_MS // 1000)
        return dead, len(look)

    def _remove_stale(self, conn: Any, per_queue: int | None) -> int:
        """Remove ids Postgres says are not runnable (not due, claimed, finished)
        from the head of each ready set (``per_queue`` ids; all for None)."""
        removed = 0
        for queue in self.mirror.queues():
            ids = self.mirror.head(queue, per_queue)
            for start in range(0, len(ids), PAGE):
                chunk = ids[start:start + PAGE]
                runnable = {i for i, _, _ in self.queries.runnable_entries(conn, chunk)}
                removed += self.mirror.remove(queue, [i for i in chunk if i not in runnable])
        return removed


def _age(stamp: str | None, now: dt.datetime) -> float:
    if not stamp:
        return float("inf")
    return (now - dt.datetime.fromisoformat(stamp)).total_seconds()


# ---------------------------------------------------------------- status


@dataclass(frozen=True)
class MirrorHealth:
    """Mirror health for ``pgq status``."""

    reachable: bool
    built: bool = False
    error: str | None = None
    queues: dict[str, tuple[int, int]] = field(default_factory=dict)  # queue -> (ids in Redis, runnable in Postgres)
    held_by_workers: int = 0
    heartbeat_keys: int = 0
    seconds_since_pass: float | None = None
    horizon_lag_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "reachable": self.reachable, "built": self.built, "error": self.error,
            "queues": {q: {"in_redis": r, "runnable_in_postgres": p} for q, (r, p) in self.queues.items()},
            "held_by_workers": self.held_by_workers,
            "heartbeat_keys": self.heartbeat_keys, "seconds_since_pass": self.seconds_since_pass,
            "horizon_lag_seconds": self.horizon_lag_seconds,
        }


def mirror_health(settings: Settings, conn: Any) -> MirrorHealth:
    """Compare the mirror with Postgres: ids per queue, held ids, pass age and watermark lag.

    Reads the runnable set of every queue (one aggregate query), so it is meant
    for ``pgq status``, not for a hot loop.
    """
    mirror = RedisMirror(settings)
    try:
        queries = MirrorQueries(settings.schema)
        runnable = queries.runnable_counts(conn)
        now = queries.now(conn)
        try:
            state = mirror.state()
            names = sorted(set(mirror.queues()) | set(runnable))
            sizes = mirror.sizes(names)
            held, beats = mirror.counts()
        except RedisUnavailable as exc:
            return MirrorHealth(False, error=str(exc), queues={q: (0, n) for q, n in runnable.items()})
        built = bool(state.get("epoch"))
        return MirrorHealth(
            True, built, None, {q: (sizes[q], runnable.get(q, 0)) for q in names}, held, beats,
            _age(state.get("reconciled_at"), now) if built else None,
            _age(state.get("horizon"), now) if built else None,
        )
    finally:
        mirror.close()
