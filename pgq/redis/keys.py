"""Redis key names and the numbers that shape the Redis mirror.

``Keys`` names every key of one deployment: its own keys in the slot of
``{<redis_prefix>:<schema>}`` and each queue's keys in a slot of their own
(Redis Cluster hash tags); the layout is drawn in the
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
    """Redis key names of one deployment (prefix and schema).

    Deployment keys share the slot of ``base`` (``{<prefix>:<schema>}``); each
    queue's keys share the slot of ``slot(queue)`` (``{<prefix>:<schema>:q:<queue>}``),
    one of its own, so on Redis Cluster the queues spread across the nodes and
    every script touches the keys of one queue only.
    """

    #: Written into the mirror hash by a rebuild; a mirror without it was built with
    #: an older layout, whose keys the next rebuild deletes.
    LAYOUT = "2"

    def __init__(self, prefix: str, schema: str) -> None:
        self.name = f"{prefix}:{schema}"
        self.base = "{" + self.name + "}"
        #: A SCAN pattern matching every key of this deployment (its queues' too).
        self.pattern = "{" + self.name + "[:}]*"
        self.queues = f"{self.base}:queues"
        self.mirror = f"{self.base}:mirror"
        self.building = f"{self.base}:building"
        self.lease = f"{self.base}:reconciler"

    def slot(self, queue: str) -> str:
        """The hash tag of ``queue``'s keys."""
        return "{" + f"{self.name}:q:{queue}" + "}"

    def ready(self, queue: str) -> str:
        return f"{self.slot(queue)}:ready"

    def wake(self, queue: str) -> str:
        return f"{self.slot(queue)}:wake"

    def built(self, queue: str) -> str:
        """Exists once the queue's ready set was rebuilt from Postgres (absent after data loss)."""
        return f"{self.slot(queue)}:built"

    def queue_building(self, queue: str) -> str:
        return f"{self.slot(queue)}:building"

    def owners(self, queue: str) -> str:
        return f"{self.slot(queue)}:owners"

    def popped_at(self, queue: str) -> str:
        return f"{self.slot(queue)}:popped-at"

    def popped(self, worker: str, queue: str) -> str:
        return f"{self.slot(queue)}:popped:{worker}"

    def worker_wake(self, worker: str, queue: str) -> str:
        return f"{self.slot(queue)}:wake-worker:{worker}"

    def heartbeat(self, worker: str) -> str:
        return f"{self.base}:heartbeat:{worker}"

    def legacy(self, queues: list[str], owners: list[str]) -> list[str]:
        """Keys of the layout before per-queue slots (layout 1), for deletion."""
        return [f"{self.base}:owners", f"{self.base}:popped-at",
                *[f"{self.base}:ready:{q}" for q in queues], *[f"{self.base}:wake:{q}" for q in queues],
                *[f"{self.base}:popped:{w}" for w in owners]]
