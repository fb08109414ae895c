"""Redis key names and the numbers that shape the Redis mirror.

``Keys`` names every key of one deployment (``P`` = ``{<redis_prefix>:<schema>}``;
the braces are a Redis Cluster hash tag, so one deployment's keys share a
slot and scripts may touch them together); the layout is drawn in the
package docstring (``pgq.redis``). ``score`` orders a ready set.
"""

from __future__ import annotations

#: Scores: (5 - priority) * PRIORITY_SPAN + id, exact in a double for ids below 2**50.
PRIORITY_SPAN = 2**50
#: Wake-up tokens kept per queue (each wakes one idle worker).
WAKE_CAP = 64
#: How long an idle worker blocks in BLPOP before looking again (seconds).
BLOCK_SECONDS = 1.0
#: Rows per page when the reconciler reads runnable jobs (and ids per offer).
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


def batch_ids(value: str) -> list[int]:
    """The ids of a popped batch as stored: "<pop time ms> <id> <id> ..."."""
    return [int(i) for i in value.split()[1:]]


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
