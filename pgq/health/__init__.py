"""Worker health (issue 11): samples, the health score, anomalies, failure prediction, alert rules.

Workers measure themselves (``pgq.worker.metrics``) and send a sample with
each heartbeat (``heartbeat_worker_v3``); this package owns what is computed
from the samples: ``score`` (the 0-1 health score), the statements that write
and read them (``queries``). Pure functions over numpy arrays, separate from the
readers that load the arrays from Postgres, so each can be tested alone. It
never touches the claim path. Importing the package (and ``queries``) loads
neither numpy nor scipy: a worker pays for them only when it scores a sample.
"""

#: The numeric metrics of a sample, in the order the reader selects them (``samples.SampleSet``).
METRICS = (
    "jobs_completed", "jobs_failed", "error_rate", "latency_p50_ms", "latency_p95_ms", "claim_rtt_ms",
    "ack_rtt_ms", "ack_lag_ms", "in_flight", "capacity", "stuck_handlers", "rss_bytes", "cpu_percent",
    "loop_lag_ms", "health_score",
)

#: Below this health score a worker is failing (SPEC §8): it evacuates (``evacuation``).
FAILING = 0.3
#: Below this health score a worker is degraded: it claims smaller batches.
DEGRADED = 0.7
