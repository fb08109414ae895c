"""PGQ_REDIS_URL names one server, a Sentinel-managed master or a Redis Cluster:
parsed and validated in Settings, with the password never in an error."""

from __future__ import annotations

import pytest

import pgq
from pgq.errors import ConfigurationError
from pgq.redis.keys import Keys
from pgq.redis.topology import parse_topology
from pgq.settings import redact_url

SECRET = "s3cr3t-pw"


def test_sentinel_url_names_the_sentinels_the_master_and_the_database() -> None:
    t = parse_topology(f"rediss+sentinel://app:{SECRET}@10.0.0.1:26379,[::1]:26380/main/2"
                       "?ssl_ca_certs=/ca.pem&sentinel_password=x")
    assert (t.kind, t.nodes, t.master, t.db, t.username, t.password, t.tls) == (
        "sentinel", (("10.0.0.1", 26379), ("::1", 26380)), "main", 2, "app", SECRET, True)
    assert t.options == {"ssl_ca_certs": "/ca.pem", "sentinel_password": "x"}


def test_cluster_url_lists_startup_nodes() -> None:
    t = parse_topology("redis+cluster://a:7000,b:7001")
    assert (t.kind, t.nodes, t.cluster, t.tls) == ("cluster", (("a", 7000), ("b", 7001)), True, False)
    assert parse_topology("redis://localhost:6379/0").kind == "single"


@pytest.mark.parametrize("url", [
    f"redis+sentinel://u:{SECRET}@h:1",                 # no master name
    f"redis+sentinel://u:{SECRET}@h:1/m/x",             # db not a number
    f"redis+cluster://u:{SECRET}@h:1/0",                # a cluster has database 0 only
    f"redis+cluster://u:{SECRET}@h:port",               # port not a number
    f"redis+cluster://u:{SECRET}@h:1?timeout=3",        # unknown option
    f"memcached://u:{SECRET}@h:1",                      # unknown scheme
])
def test_a_malformed_url_is_a_configuration_error_without_the_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as failed:
        pgq.Settings(database_url="postgresql://localhost/x", redis_url=url)
    assert "PGQ_REDIS_URL" in str(failed.value) and SECRET not in str(failed.value)


def test_redaction_covers_sentinel_passwords_in_the_query() -> None:
    url = f"redis+sentinel://u:{SECRET}@h:1/m?sentinel_password={SECRET}x"
    assert SECRET not in (redact_url(url) or "")


def test_each_queue_has_a_hash_slot_of_its_own() -> None:
    keys = Keys("pgq", "pgq")
    tag = keys.slot("emails")
    assert tag == "{pgq:pgq:q:emails}" and keys.slot("sms") != tag
    for key in (keys.ready("emails"), keys.wake("emails"), keys.popped("w", "emails"), keys.built("emails"),
                keys.owners("emails"), keys.popped_at("emails"), keys.worker_wake("w", "emails")):
        assert key.startswith(tag + ":")
    for key in (keys.mirror, keys.queues, keys.lease, keys.building, keys.heartbeat("w")):
        assert key.startswith("{pgq:pgq}:")
