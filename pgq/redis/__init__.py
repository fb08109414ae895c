"""The optional Redis accelerator: runnable job ids mirrored in Redis, popped by
workers, claimed in Postgres, reconciled from Postgres.

The modules: ``keys`` (key names, scores, the numbers below), ``scripts/*.lua``
(the Lua scripts, read like ``db/`` SQL files), ``breaker`` (the circuit
breaker), ``client`` (``RedisClient``: every Redis command, behind the
breaker), ``claim_source`` (``RedisClaimSource``: the worker's claim source),
``reconciler`` (``Reconciler`` and the worker's ``ReconcilerService``) and
``health`` (``redis_health`` for ``pgq status``). "The mirror" is the data in
Redis (ready sets and the ``P:mirror`` hash), never a Python object.

Redis never decides anything. It holds *suggestions*: ids that were runnable
when they were written. A worker pops ids (atomically recording them as a
batch of its own), then claims them with ``pgq.claim_jobs``, which applies the
fence of ``get_runnable_jobs``; ids Postgres no longer considers runnable are
dropped. Every Redis structure can be rebuilt from Postgres, and every Redis
failure sends the caller down the Postgres path (``get_runnable_jobs``).
Nothing here imports the ``redis`` package until a client is created, and
pgq's core imports this package only when ``redis_url`` is set.

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
next ``AHEAD_SECONDS`` (see ``RedisClaimSource``), so it pops about once per two
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

