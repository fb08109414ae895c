"""Names the bench uses everywhere. No imports: a freshly started worker process
loads this and ``workload`` only (plus pgq), as a real worker would."""

SCHEMA = "pgq_bench"
BENCH_QUEUE = "bench"
TASK = "bench.job"
# application_name of every connection the bench opens, so that Postgres-side
# figures (connections, settling stats) can tell them apart from other sessions.
APP_PREFIX = "pgq-bench"
APP_METER = f"{APP_PREFIX}-meter"
