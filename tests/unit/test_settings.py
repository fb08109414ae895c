"""Settings: parsing PGQ_* variables, validation naming the variable, redacted repr."""

from __future__ import annotations

import dataclasses
import math

import pytest

import pgq
from pgq.errors import ConfigurationError
from pgq.settings import Settings, redact_url, validate_schema_name

SECRET = "s3cret-Pa55"


# ---------------------------------------------------------------- from_env


def test_from_env_parses_every_kind_of_value() -> None:
    env = {
        "PGQ_DATABASE_URL": "postgresql://app@db.example:5432/app",
        "PGQ_SCHEMA": "jobs_2",
        "PGQ_POLL_INTERVAL_SECONDS": "0.25",
        "PGQ_HEARTBEAT_INTERVAL_SECONDS": "5",
        "PGQ_STALE_AFTER_SECONDS": "15",
        "PGQ_MAX_ATTEMPTS": "7",
        "PGQ_POOL_SIZE": "9",
        "PGQ_LISTEN": "off",
        "PGQ_DEFAULT_QUEUE": "emails",
        "PGQ_REDIS_URL": "redis://localhost:6379/0",
    }
    s = Settings.from_env(env)
    assert s.database_url == "postgresql://app@db.example:5432/app"
    assert s.schema == "jobs_2"
    assert s.poll_interval_seconds == 0.25
    assert s.heartbeat_interval_seconds == 5.0 and isinstance(s.heartbeat_interval_seconds, float)
    assert s.stale_after_seconds == 15.0
    assert s.max_attempts == 7 and isinstance(s.max_attempts, int)
    assert s.pool_size == 9
    assert s.listen is False
    assert s.default_queue == "emails"
    assert s.redis_url == "redis://localhost:6379/0"
    # Untouched fields keep their defaults.
    assert s.qdrant_url is None
    assert s.claim_batch_size == Settings().claim_batch_size


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "on", " On "])
def test_from_env_accepts_true_spellings(raw: str) -> None:
    assert Settings.from_env({"PGQ_LISTEN": raw}).listen is True


@pytest.mark.parametrize("raw", ["0", "false", "No", "off"])
def test_from_env_accepts_false_spellings(raw: str) -> None:
    assert Settings.from_env({"PGQ_LISTEN": raw}).listen is False


def test_from_env_ignores_empty_variables() -> None:
    s = Settings.from_env({"PGQ_POOL_SIZE": "", "PGQ_DATABASE_URL": ""})
    assert s.pool_size == Settings().pool_size
    assert s.database_url is None


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGQ_MAX_ATTEMPTS", "11")
    monkeypatch.setenv("PGQ_SCHEMA", "from_env")
    s = Settings.from_env()
    assert (s.max_attempts, s.schema) == (11, "from_env")


def test_overrides_win_over_environment_and_none_overrides_are_ignored() -> None:
    env = {"PGQ_MAX_ATTEMPTS": "11", "PGQ_SCHEMA": "from_env"}
    s = Settings.from_env(env, max_attempts=2, schema=None)
    assert s.max_attempts == 2
    assert s.schema == "from_env"


def test_unknown_override_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown settings: bogus_option"):
        Settings.from_env({}, bogus_option=1)


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("PGQ_POOL_SIZE", "four"),
        ("PGQ_MAX_ATTEMPTS", "2.5"),
        ("PGQ_POLL_INTERVAL_SECONDS", "fast"),
        ("PGQ_LISTEN", "maybe"),
    ],
)
def test_from_env_unparsable_value_names_the_variable(variable: str, raw: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({variable: raw})
    assert variable in str(info.value)
    assert repr(raw) in str(info.value)


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("PGQ_POLL_INTERVAL_SECONDS", "0"),
        ("PGQ_POLL_INTERVAL_SECONDS", "nan"),
        ("PGQ_HEARTBEAT_INTERVAL_SECONDS", "-1"),
        ("PGQ_MAINTENANCE_INTERVAL_SECONDS", "0"),
        ("PGQ_ACK_INTERVAL_SECONDS", "-0.5"),
        ("PGQ_JOB_RETENTION_SECONDS", "-1"),
        ("PGQ_SHUTDOWN_GRACE_SECONDS", "-3"),
        ("PGQ_MAX_ATTEMPTS", "0"),
        ("PGQ_CLAIM_BATCH_SIZE", "0"),
        ("PGQ_CLAIMS_IN_FLIGHT", "0"),
        ("PGQ_ACK_BATCH_SIZE", "-2"),
        ("PGQ_POOL_SIZE", "1"),
        ("PGQ_MAX_PAYLOAD_BYTES", "0"),
        ("PGQ_DEFAULT_QUEUE", "has space"),
        ("PGQ_DEFAULT_QUEUE", "semi;colon"),
        ("PGQ_DATABASE_URL", "   "),
        ("PGQ_SCHEMA", "Public"),
    ],
)
def test_from_env_invalid_value_names_the_variable(variable: str, raw: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        Settings.from_env({variable: raw})


# ---------------------------------------------------------------- keyword validation


@pytest.mark.parametrize(
    ("field", "value", "variable"),
    [
        ("poll_interval_seconds", 0, "PGQ_POLL_INTERVAL_SECONDS"),
        ("poll_interval_seconds", True, "PGQ_POLL_INTERVAL_SECONDS"),
        ("poll_interval_seconds", "1", "PGQ_POLL_INTERVAL_SECONDS"),
        ("heartbeat_interval_seconds", -0.1, "PGQ_HEARTBEAT_INTERVAL_SECONDS"),
        ("job_retention_seconds", -1, "PGQ_JOB_RETENTION_SECONDS"),
        ("max_attempts", 1.5, "PGQ_MAX_ATTEMPTS"),
        ("max_attempts", False, "PGQ_MAX_ATTEMPTS"),
        ("claim_batch_size", 0, "PGQ_CLAIM_BATCH_SIZE"),
        ("claims_in_flight", 0, "PGQ_CLAIMS_IN_FLIGHT"),
        ("claims_in_flight", True, "PGQ_CLAIMS_IN_FLIGHT"),
        ("pool_size", 1, "PGQ_POOL_SIZE"),
        ("listen", "yes", "PGQ_LISTEN"),
        ("redis_url", "", "PGQ_REDIS_URL"),
        ("qdrant_url", 5, "PGQ_QDRANT_URL"),
        ("listen_database_url", " ", "PGQ_LISTEN_DATABASE_URL"),
        ("default_queue", "", "PGQ_DEFAULT_QUEUE"),
        ("schema", "pgq;drop", "PGQ_SCHEMA"),
    ],
)
def test_constructor_rejects_bad_value_naming_the_variable(field: str, value: object, variable: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        Settings(**{field: value})  # type: ignore[arg-type]


def test_configuration_error_is_a_pgq_error() -> None:
    with pytest.raises(pgq.PgqError):
        Settings(pool_size=0)


def test_stale_after_must_be_at_least_twice_the_heartbeat() -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings(heartbeat_interval_seconds=10, stale_after_seconds=19.9)
    message = str(info.value)
    assert "PGQ_STALE_AFTER_SECONDS" in message
    assert "PGQ_HEARTBEAT_INTERVAL_SECONDS" in message
    # Exactly two heartbeats is the boundary, and it is allowed.
    s = Settings(heartbeat_interval_seconds=10, stale_after_seconds=20)
    assert s.stale_after_seconds == 20


def test_default_stale_after_is_consistent_with_a_raised_heartbeat() -> None:
    # 30 s heartbeat with the default 90 s stale_after is valid; 50 s is not.
    assert Settings.from_env({"PGQ_HEARTBEAT_INTERVAL_SECONDS": "45"}).stale_after_seconds == 90
    with pytest.raises(ConfigurationError, match="PGQ_STALE_AFTER_SECONDS"):
        Settings.from_env({"PGQ_HEARTBEAT_INTERVAL_SECONDS": "50"})


def test_settings_are_frozen_and_replace_validates_again() -> None:
    s = Settings(database_url="postgresql://localhost/app")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.pool_size = 10  # type: ignore[misc]
    t = s.replace(pool_size=10)
    assert (s.pool_size, t.pool_size) == (Settings().pool_size, 10)
    assert t.database_url == s.database_url
    with pytest.raises(ConfigurationError, match="PGQ_POOL_SIZE"):
        s.replace(pool_size=1)


def test_require_database_url_says_how_to_configure_it() -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings().require_database_url()
    assert "PGQ_DATABASE_URL" in str(info.value)
    assert Settings(database_url="postgresql://x/y").require_database_url() == "postgresql://x/y"


# ---------------------------------------------------------------- schema names


@pytest.mark.parametrize("name", ["pgq", "_private", "jobs_2", "a", "x" * 40])
def test_valid_schema_names(name: str) -> None:
    assert validate_schema_name(name) == name
    assert Settings(schema=name).schema == name


@pytest.mark.parametrize(
    "name",
    ["", "Pgq", "2fast", "a-b", "a b", "a;drop schema pgq", 'a"b', "a.b", "sch\u00e9ma", "x" * 41, None, 7],
)
def test_invalid_schema_names_are_rejected_naming_pgq_schema(name: object) -> None:
    with pytest.raises(ConfigurationError, match="PGQ_SCHEMA"):
        Settings(schema=name)  # type: ignore[arg-type]


def test_schema_validation_can_name_another_variable() -> None:
    with pytest.raises(ConfigurationError, match="--schema"):
        validate_schema_name("Bad", variable="--schema")


# ---------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    ("url", "visible"),
    [
        (f"postgresql://app:{SECRET}@db.example:5432/app", "db.example"),
        (f"postgresql+psycopg://app:{SECRET}@db.example/app", "db.example"),
        (f"postgresql://:{SECRET}@db.example/app", "db.example"),
        (f"postgresql://app:pa:{SECRET}@db.example/app", "db.example"),
        (f"host=db.example user=app password={SECRET} dbname=app", "dbname=app"),
        (f"host=db.example password = {SECRET} dbname=app", "dbname=app"),
        (f"host=db.example PASSWORD='{SECRET} with space' dbname=app", "dbname=app"),
        (f"postgresql://app@db.example/app?password={SECRET}&sslmode=require", "sslmode=require"),
        (f"postgresql://app@db.example/app?sslmode=require&password={SECRET}", "sslmode=require"),
    ],
)
def test_redact_url_hides_the_password_in_every_form(url: str, visible: str) -> None:
    redacted = redact_url(url)
    assert redacted is not None
    assert SECRET not in redacted
    assert "***" in redacted
    assert visible in redacted


def test_redact_url_leaves_urls_without_password_alone() -> None:
    for url in ("postgresql://app@db.example:5432/app", "host=db.example dbname=app", None):
        assert redact_url(url) == url


@pytest.mark.parametrize(
    "field",
    ["database_url", "redis_url", "qdrant_url", "listen_database_url"],
)
@pytest.mark.parametrize(
    "template",
    [
        "postgresql://app:{s}@db.example:5432/app",
        "host=db.example user=app password={s} dbname=app",
        "postgresql://app@db.example/app?password={s}",
    ],
)
def test_repr_and_str_never_show_a_password(field: str, template: str) -> None:
    value = template.format(s=SECRET)
    if field == "redis_url":
        value = value.replace("postgresql://", "redis://")
        if "://" not in value:  # a DSN is no Redis URL: refused, without the password
            with pytest.raises(ConfigurationError) as info:
                Settings(redis_url=value)
            assert SECRET not in str(info.value)
            return
    s = Settings(**{field: value})
    for text in (repr(s), str(s), f"{s}", f"{s!r}"):
        assert SECRET not in text
        assert "***" in text
        assert "db.example" in text
    # The value itself is untouched: only the representation is redacted.
    assert SECRET in getattr(s, field)


def test_repr_of_a_queue_does_not_show_the_password() -> None:
    q = pgq.connect(settings=Settings(database_url=f"postgresql://app:{SECRET}@db.example/app"))
    assert SECRET not in repr(q)
    assert "db.example" in repr(q)


# --- retention (issue 9)
def test_retention_settings_come_from_the_environment() -> None:
    settings = Settings.from_env({"PGQ_PRUNE_BATCH_SIZE": "2000", "PGQ_PRUNE_TIME_BUDGET_SECONDS": "2.5",
                                  "PGQ_WORKER_RETENTION_SECONDS": "86400"})
    assert (settings.prune_batch_size, settings.prune_time_budget_seconds, settings.worker_retention_seconds) == (
        2000, 2.5, 86400.0)
    default = Settings()
    assert (default.prune_batch_size, default.prune_time_budget_seconds, default.worker_retention_seconds) == (
        5000, 5.0, 7 * 24 * 3600.0)


def test_dead_jobs_are_kept_until_purged_unless_a_dead_job_retention_is_set() -> None:
    assert Settings().dead_job_retention_seconds == math.inf
    assert Settings.from_env({"PGQ_DEAD_JOB_RETENTION_SECONDS": "86400"}).dead_job_retention_seconds == 86400.0
    assert Settings.from_env({"PGQ_DEAD_JOB_RETENTION_SECONDS": "inf"}).dead_job_retention_seconds == math.inf
    with pytest.raises(ConfigurationError, match="PGQ_DEAD_JOB_RETENTION_SECONDS must be a float"):
        Settings.from_env({"PGQ_DEAD_JOB_RETENTION_SECONDS": "a week"})


@pytest.mark.parametrize(
    ("field", "value", "variable"),
    [
        ("prune_batch_size", 0, "PGQ_PRUNE_BATCH_SIZE"),
        ("prune_batch_size", 1_000_001, "PGQ_PRUNE_BATCH_SIZE"),
        ("prune_batch_size", True, "PGQ_PRUNE_BATCH_SIZE"),
        ("prune_batch_size", 2.5, "PGQ_PRUNE_BATCH_SIZE"),
        ("prune_time_budget_seconds", 0, "PGQ_PRUNE_TIME_BUDGET_SECONDS"),
        ("prune_time_budget_seconds", float("nan"), "PGQ_PRUNE_TIME_BUDGET_SECONDS"),
        ("prune_time_budget_seconds", float("inf"), "PGQ_PRUNE_TIME_BUDGET_SECONDS"),
        ("worker_retention_seconds", -1, "PGQ_WORKER_RETENTION_SECONDS"),
        ("worker_retention_seconds", "7d", "PGQ_WORKER_RETENTION_SECONDS"),
        ("dead_job_retention_seconds", -1, "PGQ_DEAD_JOB_RETENTION_SECONDS"),
        ("dead_job_retention_seconds", float("nan"), "PGQ_DEAD_JOB_RETENTION_SECONDS"),
        ("dead_job_retention_seconds", True, "PGQ_DEAD_JOB_RETENTION_SECONDS"),
        ("dead_job_retention_seconds", "30d", "PGQ_DEAD_JOB_RETENTION_SECONDS"),
    ],
)
def test_bad_retention_settings_name_their_variable(field: str, value: object, variable: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        Settings(**{field: value})


# --- AUTO snapshots (issue 12)
def test_snapshot_settings_come_from_the_environment_and_default_to_off() -> None:
    settings = Settings.from_env({"PGQ_SNAPSHOT_INTERVAL_SECONDS": "300", "PGQ_SNAPSHOT_AFTER_CHANGES": "10000",
                                  "PGQ_SNAPSHOT_FULL_EVERY": "24", "PGQ_SNAPSHOT_RETENTION_SECONDS": "86400"})
    assert (settings.snapshot_interval_seconds, settings.snapshot_after_changes, settings.snapshot_full_every,
            settings.snapshot_retention_seconds) == (300.0, 10000, 24, 86400.0)
    default = Settings()
    assert (default.snapshot_interval_seconds, default.snapshot_after_changes, default.snapshot_full_every,
            default.snapshot_retention_seconds) == (0.0, 0, 10, 7 * 24 * 3600.0)


@pytest.mark.parametrize(
    ("field", "value", "variable"),
    [
        ("snapshot_interval_seconds", -1, "PGQ_SNAPSHOT_INTERVAL_SECONDS"),
        ("snapshot_interval_seconds", float("inf"), "PGQ_SNAPSHOT_INTERVAL_SECONDS"),
        ("snapshot_after_changes", -5, "PGQ_SNAPSHOT_AFTER_CHANGES"),
        ("snapshot_after_changes", 2.5, "PGQ_SNAPSHOT_AFTER_CHANGES"),
        ("snapshot_full_every", 0, "PGQ_SNAPSHOT_FULL_EVERY"),
        ("snapshot_full_every", True, "PGQ_SNAPSHOT_FULL_EVERY"),
        ("snapshot_retention_seconds", float("nan"), "PGQ_SNAPSHOT_RETENTION_SECONDS"),
    ],
)
def test_bad_snapshot_settings_name_their_variable(field: str, value: object, variable: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        Settings(**{field: value})
