"""The worker: claims jobs, runs their handlers, writes their outcomes.

``Worker`` (``worker.py``) is the facade; its parts are ``claim`` (the
``ClaimSource`` protocol and the Postgres source), ``claim_loop`` (when and how
much to claim, claims in flight), ``prefetch`` (the pure claim sizer),
``runner`` (threads, event loop, deadlines), ``acknowledger`` (batched
outcome writes, back-pressure) and ``heartbeat`` (heartbeat and maintenance
thread). The Redis claim source lives in ``pgq.redis``.
"""

from pgq.worker.counters import WorkerCounters
from pgq.worker.worker import Worker

__all__ = ["Worker", "WorkerCounters"]
