"""Which Redis deployment ``PGQ_REDIS_URL`` names: one server, Sentinel, or Cluster.

``parse_topology`` validates the URL (no network, no ``redis`` import) and
``connect`` builds the redis-py client for it. The schemes:

- ``redis://`` / ``rediss://`` / ``unix://``: one server (redis-py's URL syntax;
  ``rediss`` is TLS, and ``?ssl_ca_certs=/path/ca.pem`` names the CA).
- ``redis+sentinel://[user:password@]host:port[,host:port...]/<master>[/<db>]``
  (``rediss+sentinel`` for TLS to the master and the sentinels): the master
  that the sentinels name, followed across a failover. The credentials are the
  master's; ``?sentinel_username=&sentinel_password=`` are the sentinels' own.
- ``redis+cluster://[user:password@]host:port[,host:port...]`` (``rediss+cluster``
  for TLS): Redis Cluster, from any of its nodes.

Query options ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` and
``ssl_cert_reqs`` apply to every TLS connection.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from pgq.errors import ConfigurationError

TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")


@dataclass(frozen=True)
class Topology:
    """A parsed ``PGQ_REDIS_URL``: ``kind`` is "single", "sentinel" or "cluster"."""

    kind: str
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    master: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    options: dict[str, str] = field(default_factory=dict)

    @property
    def cluster(self) -> bool:
        return self.kind == "cluster"


def parse_topology(url: str) -> Topology:
    """Parse ``PGQ_REDIS_URL``. Raises ``ConfigurationError`` naming the problem (never the password)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("redis", "rediss", "unix"):
        return Topology("single", url, tls=scheme == "rediss")
    kinds = {"redis+sentinel": "sentinel", "rediss+sentinel": "sentinel",
             "redis+cluster": "cluster", "rediss+cluster": "cluster"}
    if scheme not in kinds:
        raise ConfigurationError(
            f"PGQ_REDIS_URL must start with redis://, rediss://, unix://, redis+sentinel://, "
            f"rediss+sentinel://, redis+cluster:// or rediss+cluster://: got {redact_url(url)}")
    kind = kinds[scheme]
    # By hand, not urlsplit: the password (up to the last "@") may hold any character.
    userinfo, _, tail = url.split("://", 1)[1].rpartition("@")
    username, _, password = userinfo.partition(":")
    tail, _, query = tail.partition("?")
    hosts, _, rest = tail.partition("/")
    nodes = tuple(_node(h, url) for h in hosts.split(","))
    path = [p for p in rest.split("/") if p]
    options = dict(parse_qsl(query))
    unknown = set(options) - set(TLS_OPTIONS) - (set(SENTINEL_OPTIONS) if kind == "sentinel" else set())
    if unknown:
        raise ConfigurationError(f"PGQ_REDIS_URL has unknown option(s) {', '.join(sorted(unknown))}: {redact_url(url)}")
    master, db = "", 0
    if kind == "sentinel":
        if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
            raise ConfigurationError(
                f"PGQ_REDIS_URL for Sentinel must end with /<master name>[/<db>]: got {redact_url(url)}")
        master, db = unquote(path[0]), int(path[1]) if len(path) == 2 else 0
    elif path:
        raise ConfigurationError(f"PGQ_REDIS_URL for Redis Cluster takes no path (database 0 only): got {redact_url(url)}")
    return Topology(kind, url, nodes, master, db, unquote(username) or None, unquote(password) or None,
                    scheme.startswith("rediss"), options)


def redact_url(url: str) -> str:
    """``url`` without its credentials or query (this module may not import pgq.settings:
    the settings import it to validate the URL)."""
    head, sep, rest = url.partition("://")
    if not sep:
        return "a value that is not a URL"
    return head + sep + rest.rpartition("@")[2].split("?", 1)[0]


def _node(text: str, url: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"PGQ_REDIS_URL must list nodes as host:port: got {redact_url(url)}")
    return host.strip("[]"), int(port)


def connect(topology: Topology, *, asyncio: bool = False, **kwargs: Any) -> Any:
    """A redis-py client for ``topology``; ``kwargs`` go to every connection
    (timeouts, retry, decode_responses, client_name). ``asyncio``: the
    ``redis.asyncio`` client of the same topology (its modules mirror redis-py's)."""
    module: Any = importlib.import_module("redis.asyncio" if asyncio else "redis")
    if topology.kind == "single":
        return module.Redis.from_url(topology.url, **kwargs)
    tls: dict[str, Any] = {"ssl": True, **{k: v for k, v in topology.options.items() if k in TLS_OPTIONS}} \
        if topology.tls else {}
    auth: dict[str, Any] = {"username": topology.username, "password": topology.password}
    if topology.kind == "cluster":
        cluster = importlib.import_module(f"{module.__name__}.cluster")
        for name in ("retry", "retry_on_timeout"):  # the cluster client retries on its own (re-reading the slots)
            kwargs.pop(name, None)
        node: Any = cluster.ClusterNode  # untyped in redis-py
        return cluster.RedisCluster(startup_nodes=[node(h, p) for h, p in topology.nodes],
                            **auth, **tls, **kwargs)
    sentinel = importlib.import_module(f"{module.__name__}.sentinel")
    own: dict[str, Any] = {k.removeprefix("sentinel_"): v for k, v in topology.options.items() if k in SENTINEL_OPTIONS}
    own.update({k: kwargs[k] for k in ("socket_timeout", "socket_connect_timeout") if k in kwargs})
    own.update(tls)
    sentinels: Any = sentinel.Sentinel  # untyped in redis-py
    found = sentinels(list(topology.nodes), sentinel_kwargs=own, **tls)
    return found.master_for(topology.master, db=topology.db, **auth, **kwargs)
