"""Worker health (issue 11): samples, the health score, anomalies, failure prediction, alert rules.

Workers measure themselves (``pgq.worker.metrics``) and send a sample with
each heartbeat (``heartbeat_worker_v3``); this package owns what is computed
from the samples: ``score`` (the 0-1 health score), the statements that write
and read them (``queries``). Pure functions over numpy arrays, separate from the
readers that load the arrays from Postgres, so each can be tested alone. It
never touches the claim path.
"""
