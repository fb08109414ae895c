"""Production Redis topologies owned by one test: Redis Cluster, Sentinel, TLS with an ACL user.

Every server is a real ``redis-server`` process (``OwnedRedis``) on a free
port of 127.0.0.1, with its own temporary directory; ``stop()`` kills every
process it started, also when the test failed. A missing binary (redis-server,
redis-cli, openssl) is an error naming the Debian package, never a skip.

- ``OwnedCluster``: N masters, no replicas, ``cluster-require-full-coverage no``
  (a dead node's slots fail, the others keep serving); ``kill``/``restart`` of
  one node brings it back empty (no persistence) with its slots (nodes.conf).
- ``OwnedSentinel``: a master, a replica and three sentinels; ``fail_over``
  kills the master and waits for the sentinels to promote the replica.
- ``TlsFiles``: a test CA and a server certificate for 127.0.0.1/localhost,
  made with the openssl CLI; used by Redis TLS and Postgres ``verify-full``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster

from redis_service import NoRedis, OwnedRedis, free_port, redis_server_binary


def need(binary: str, package: str) -> str:
    found = shutil.which(binary)
    if found is None:
        raise NoRedis(f"{binary} is not installed (apt-get install {package})")
    return found


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``check`` (an external process' state) until true; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)  # start-up poll of external processes


class OwnedCluster:
    """A Redis Cluster of ``masters`` nodes (no replicas) owned by the caller."""

    def __init__(self, masters: int = 3) -> None:
        need("redis-cli", "redis-tools")
        # The cluster bus gets a free port of its own (by default port + 10000, which
        # may be taken or past 65535).
        self.nodes = [OwnedRedis(args=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                       "--cluster-port", str(free_port()), "--cluster-node-timeout", "1000",
                                       "--cluster-require-full-coverage", "no"))
                      for _ in range(masters)]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])

    def start(self) -> OwnedCluster:
        for node in self.nodes:
            node.start()
        subprocess.run([need("redis-cli", "redis-tools"), "--cluster", "create",
                        *[f"127.0.0.1:{n.port}" for n in self.nodes], "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        self.wait_ok()
        return self

    def wait_ok(self) -> None:
        """Until every live node says the cluster is ok and knows every slot's owner."""
        def ok() -> bool:
            for node in self.nodes:
                if node.process is None:
                    continue
                with node.client() as c:
                    if "cluster_state:ok" not in c.execute_command("CLUSTER", "INFO"):
                        return False
            return True

        wait_until(ok, "the cluster to be ok", 60)

    def client(self) -> Any:
        return RedisCluster(host="127.0.0.1", port=self.nodes[0].port, decode_responses=True, socket_timeout=5)

    def node_of(self, key: str) -> OwnedRedis:
        """The node that serves ``key``'s slot."""
        with self.nodes[0].client() as c:
            slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    port = int(master[1])
                    return next(n for n in self.nodes if n.port == port)
        raise AssertionError(f"no node serves the slot of {key}")

    def kill(self, node: OwnedRedis) -> None:
        node.kill()

    def restart(self, node: OwnedRedis) -> None:
        """Start a killed node again: empty, with its slots (its nodes.conf is kept)."""
        node.start()
        self.wait_ok()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class OwnedSentinel:
    """A master, a replica and three sentinels monitoring ``master_name``."""

    def __init__(self, master_name: str = "pgqmaster") -> None:
        self.name = master_name
        self.master = OwnedRedis()
        self.replica = OwnedRedis()
        self.replica.args = ("--replicaof", "127.0.0.1", str(self.master.port))
        self.directory = tempfile.mkdtemp(prefix="pgq-sentinel-")
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports) + f"/{self.name}"

    def start(self) -> OwnedSentinel:
        self.master.start()
        self.replica.start()
        for i, port in enumerate(self.sentinel_ports):
            conf = Path(self.directory) / f"sentinel-{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\nprotected-mode no\n"
                f"logfile {self.directory}/sentinel-{i}.log\n"
                f"sentinel monitor {self.name} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.name} 1000\n"
                f"sentinel failover-timeout {self.name} 5000\n", encoding="utf-8")
            self.sentinels.append(subprocess.Popen([redis_server_binary(), str(conf), "--sentinel"],
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_until(lambda: self.master_port() == self.master.port and self._replica_synced(), "Sentinel to start")
        return self

    def _replica_synced(self) -> bool:
        with self.replica.client() as c:
            return bool(c.info("replication").get("master_link_status") == "up")

    def master_port(self) -> int:
        """The master's port as the first answering sentinel names it."""
        for port in self.sentinel_ports:
            try:
                with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, decode_responses=True) as s:
                    return int(s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)[1])
            except (redis.RedisError, OSError):
                continue
        raise AssertionError("no sentinel answers")

    def fail_over(self) -> None:
        """kill -9 the master; wait until the sentinels name the replica."""
        old = self.master.port
        self.master.kill()
        wait_until(lambda: self.master_port() != old, "Sentinel to promote the replica", 60)
        self.master, self.replica = self.replica, self.master

    def stop(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.master.stop()
        self.replica.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class TlsFiles:
    """A test CA and a certificate for 127.0.0.1 and localhost signed by it (openssl CLI)."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def key(self) -> Path:
        return self.directory / "server.key"

    @classmethod
    def make(cls, directory: Path) -> TlsFiles:
        openssl = need("openssl", "openssl")
        d = str(directory)

        def run(*args: str) -> None:
            subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60, cwd=d)

        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=pgq test CA",
            "-keyout", "ca.key", "-out", "ca.crt")
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
            "-out", "server.csr")
        (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n", encoding="utf-8")
        run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
        os.chmod(directory / "server.key", 0o600)
        return cls(directory)


def tls_redis(tls: TlsFiles, user: str, password: str, prefix: str) -> OwnedRedis:
    """A redis-server that speaks TLS only, with the default user off and an ACL user
    ``user`` limited to the keys of ``prefix`` and to the commands outside ``@dangerous``
    (the rule the README gives operators)."""
    server = OwnedRedis(url=f"rediss://{user}:{password}@127.0.0.1:{{port}}/0?ssl_ca_certs={tls.ca}")
    server.args = ("--port", "0", "--tls-port", str(server.port), "--tls-cert-file", str(tls.cert),
                   "--tls-key-file", str(tls.key), "--tls-ca-cert-file", str(tls.ca), "--tls-auth-clients", "no",
                   "--user", "default", "off", "--user", user, "on", f">{password}", "~{" + prefix + ":*", "&*", "+@all", "-@dangerous")
    return server
