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

Key layout (layout 2). ``P`` = ``{<redis_prefix>:<schema>}`` holds the
deployment's keys; ``Q`` = ``{<redis_prefix>:<schema>:q:<queue>}`` holds one
queue's keys. The braces are Redis Cluster hash tags: each queue's keys share
one slot of their own, so on a Cluster the queues spread across the nodes, and
every Lua script touches the keys of one queue only (a script's keys must
share a slot)::

    Q:ready                sorted set: runnable ids; score = (5 - priority) * 2**50 + id
    Q:wake                 list: wake-up tokens for idle workers (capped)
    Q:popped:<worker>      hash: pop number -> "<pop time ms> <id> <id> ...": the batches a
                           worker popped from this queue and has not claimed yet
    Q:owners               set: workers that may have popped batches of this queue
    Q:popped-at            sorted set: id -> when it was last popped (ms), for the last 10 s
    Q:wake-worker:<worker> list: interrupts one worker's blocking wait (shutdown)
    Q:built                string: the ready set is complete (set by a rebuild, or by the
                           first registration of a new queue); absent after the node lost
                           its data, and then pops of this queue answer "use Postgres"
    Q:building             the queue's rebuild token
    P:heartbeat:<worker>   string with a TTL: cheap liveness (Postgres heartbeats stay authoritative)
    P:queues               set: queues ever mirrored (registered by pushes and workers)
    P:mirror               hash: epoch, horizon, reconciled_at, full_at, layout; exists only
                           once a full rebuild completed; absent after FLUSHALL or a restart
    P:building, P:reconciler   rebuild token, reconciler lease

What spans queues is done without a multi-slot script. A worker of several
queues reads the head of each (one pipelined round trip, which also deletes
its claimed batches) and pops, with one script per queue, the queues that
hold the best ``n`` ids; priority across queues is as exact as that snapshot.
On a Cluster a blocking ``BLPOP`` reaches one slot, so such a worker first
takes any waiting token of its queues and then blocks on one queue in turn.
Registering a queue (``SADD`` to ``P:queues``) is a command of its own beside
the push. Data loss is detected per queue: a node that restarted empty, or a
replica promoted before it received ``Q:built``, leaves its queues unmarked;
their pops answer "use Postgres" and the reconciler rebuilds exactly those
queues (a token per queue, published only if the node kept it). A mirror
hash without ``layout = 2`` was written by an older pgq: the reconciler
deletes the old keys (``P:ready:<queue>``, ``P:wake:<queue>``, ``P:popped:*``,
``P:owners``, ``P:popped-at``) and rebuilds. Stop every worker of the older
version first: it would pop the old keys that nobody fills any more.

Topologies (``pgq.redis.topology``): ``PGQ_REDIS_URL`` names one server
(``redis://``, ``rediss://`` for TLS), a Sentinel-managed master
(``redis+sentinel://host:port,.../<master>``: the master is looked up again
after a failover) or a Redis Cluster (``redis+cluster://host:port,...``).
The circuit breaker is per client, not per node: while one Cluster node is
down, calls for its queues fail and every queue of that process takes the
Postgres path during each back-off.

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

