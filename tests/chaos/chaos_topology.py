"""Production topologies for the chaos suite: a primary with a streaming standby, and
worker hosts in network namespaces (``NetHost``, at the end).

``StandbyPair`` is two test-owned clusters (``chaos_cluster.Cluster``): a
primary with ``wal_level = replica``, and a hot standby cloned from it with
``pg_basebackup -R`` that streams its WAL, synchronously
(``synchronous_standby_names = '*'``, so a commit returns once the standby
flushed it) or asynchronously. Clients use one multi-host URL
(``host=a,b``, ``target_session_attrs=read-write``): libpq tries each host and
keeps the one that accepts writes, so after a failover they find the new
primary by themselves. ``fail_over()`` kills the primary (SIGKILL to the
postmaster and every server process at once, as in a crash) and promotes the
standby, as a failover manager would; the old primary is never started again
(it would be a second primary).

What an asynchronous failover lost is read from the dead primary's own WAL:
``pg_waldump`` from the standby's last replayed record to the end of the WAL
counts the commits that the clients saw and the new primary never got.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from chaos_cluster import Cluster, ClusterUnavailable
from chaos_harness import CLUSTER_SETUP, RUNS_TABLE
from pgq.migrate import upgrade
from pgq.settings import Settings

REPLICATION_SETTINGS = {
    "wal_level": "replica",
    "max_wal_senders": "5",
    "wal_keep_size": "'512MB'",
    "hot_standby": "on",
    "wal_sender_timeout": "5s",
}


def prepare_database(cluster: Cluster, name: str) -> str:
    """Create the chaos roles and database ``name`` on ``cluster``, migrated, with ``chaos.runs``."""
    with cluster.admin() as admin:
        admin.execute(CLUSTER_SETUP)  # roles, cluster-wide
    url = cluster.create_database(name)
    upgrade(Settings(database_url=url, schema="pgq"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(RUNS_TABLE)
    return url


@dataclass
class LostWal:
    """What the dead primary had committed that the standby never received."""

    bytes: int
    commits: int


class StandbyPair:
    """A primary and its streaming standby (see the module docstring)."""

    def __init__(self, *, synchronous: bool) -> None:
        self.synchronous = synchronous
        self.kind = "sync" if synchronous else "async"  # the scenario's label
        self.primary = Cluster(settings=REPLICATION_SETTINGS, hba=("host replication all 127.0.0.1/32 trust",))
        self.standby = Cluster()
        self.failed_over = False

    def start(self, dbname: str) -> str:
        """Start both servers with ``dbname`` prepared on the primary; return the multi-host URL."""
        self.primary.init()
        self.primary.start()
        prepare_database(self.primary, dbname)
        self.primary.run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres",
                         "-D", str(self.standby.data), "-R", "-X", "stream", "-c", "fast", "--no-sync")
        with (self.standby.data / "postgresql.auto.conf").open("a") as f:
            f.write(f"port = {self.standby.port}\nunix_socket_directories = '{self.standby.data}'\n"
                    "cluster_name = 'pgq_standby'\n")
        self.standby.start()
        self._await_replication("streaming")
        if self.synchronous:
            # Set after the clone, so the standby (a primary once promoted) does not inherit it.
            with self.primary.admin() as admin:
                admin.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
                admin.execute("SELECT pg_reload_conf()")
            self._await_replication("streaming", sync_state="sync")
        return self.url(dbname)

    def url(self, dbname: str) -> str:
        """The clients' URL: both hosts, the one that accepts writes wins."""
        return (f"postgresql://postgres@127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}/{dbname}"
                "?target_session_attrs=read-write")

    def _await_replication(self, state: str, sync_state: str | None = None, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with self.primary.admin() as admin:
            while True:
                row = admin.execute("SELECT state, sync_state FROM pg_stat_replication").fetchone()
                if row is not None and row[0] == state and sync_state in (None, row[1]):
                    return
                if time.monotonic() > deadline:
                    raise ClusterUnavailable(f"the standby did not reach {state}/{sync_state}: {row}\n"
                                             f"{self.standby.log_tail()}")
                time.sleep(0.05)  # polling the walsender's state

    def replication_lag(self) -> tuple[int, float | None]:
        """(bytes the standby has not replayed yet, replay lag in seconds) as the primary sees it now."""
        with self.primary.admin() as admin:
            row = admin.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,"
                                " extract(epoch FROM replay_lag)::float8 FROM pg_stat_replication").fetchone()
        assert row is not None, "no standby is connected"
        return int(row[0]), row[1]

    def hold_sender(self) -> int:
        """SIGSTOP the primary's WAL sender: the standby falls behind (as over a slow link) until
        the primary dies (``fail_over`` kills the stopped process with the rest)."""
        with self.primary.admin() as admin:
            row = admin.execute("SELECT pid FROM pg_stat_replication").fetchone()
        assert row is not None, "no WAL sender: the standby is not connected"
        os.kill(int(row[0]), signal.SIGSTOP)
        return int(row[0])

    def kill_primary(self) -> None:
        """SIGKILL the primary's postmaster and every process it started, at once (a crash)."""
        postmaster = int((self.primary.data / "postmaster.pid").read_text().split()[0])
        victims = [postmaster] + [pid for pid in _pids() if _parent(pid) == postmaster]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in victims):
            assert time.monotonic() < deadline, "the primary's processes did not die"
            time.sleep(0.01)  # waiting for the kernel to reap them

    def fail_over(self) -> LostWal:
        """Kill the primary, let the standby replay what it received, measure what it missed, promote it."""
        self.kill_primary()
        self.failed_over = True
        replayed = self._replayed_lsn()
        lost = self.lost_wal(replayed)
        self.standby.run("pg_ctl", "-D", str(self.standby.data), "-w", "-t", "60", "promote")
        return lost

    def _replayed_lsn(self, timeout: float = 30.0) -> str:
        """The end of the last record the standby replayed, once it stopped moving (its primary is gone)."""
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.standby.url(), autocommit=True) as conn:
            last = None
            while True:
                row = conn.execute("SELECT pg_last_wal_replay_lsn()::text,"
                                   " pg_last_wal_replay_lsn() = pg_last_wal_receive_lsn()").fetchone()
                assert row is not None
                if row[1] and row[0] == last:
                    return str(row[0])
                if time.monotonic() > deadline:
                    return str(row[0])
                last = row[0]
                time.sleep(0.05)  # polling replay progress

    def lost_wal(self, since: str) -> LostWal:
        """Read the dead primary's WAL from ``since`` to its end: the bytes and the commits in it."""
        done = self.primary.run_unchecked("pg_waldump", "-p", str(self.primary.data / "pg_wal"), "-s", since)
        commits = sum(1 for line in done.stdout.splitlines() if "desc: COMMIT" in line)
        # pg_waldump stops at the end of the valid WAL: "invalid record length at 0/3A5F1D8: ...".
        ends = re.findall(r"(?:invalid record length|invalid magic number \w+ in WAL segment [^,]*, LSN|"
                          r"record with incorrect prev-link [^ ]+) at ([0-9A-F]+/[0-9A-F]+)", done.stderr)
        end = ends[-1] if ends else since
        return LostWal(bytes=_lsn(end) - _lsn(since), commits=commits)

    def destroy(self) -> None:
        if not self.failed_over and (self.primary.data / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self.kill_primary()  # also when its WAL sender is stopped (pg_ctl would wait on it)
        for cluster in (self.standby, self.primary):
            with contextlib.suppress(Exception):
                cluster.destroy()


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def throughput_recovery(conn: psycopg.Connection[Any], at: dt.datetime, *, window: float = 0.5,
                        share: float = 0.8) -> tuple[float | None, float | None]:
    """(seconds from ``at`` to the first completion after it, seconds from ``at`` until a
    ``window`` that starts after that first completion has seen ``share`` of the completions of
    an equal window in the 3 s before ``at``: full throughput is back, and known to be)."""
    first_row = conn.execute("SELECT extract(epoch FROM min(finished_at) - %s)::float8 FROM pgq.job_executions"
                         " WHERE outcome = 'completed' AND finished_at > %s", (at, at)).fetchone()
    first = None if first_row is None or first_row[0] is None else float(first_row[0])
    if first is None:
        return None, None
    full = conn.execute("""
        WITH base AS (
            SELECT count(*) / 3.0 * %(window)s AS per_window FROM pgq.job_executions
            WHERE outcome = 'completed' AND finished_at >= %(at)s - interval '3 seconds' AND finished_at < %(at)s)
        SELECT extract(epoch FROM t - %(at)s)::float8 + %(window)s
        FROM base, generate_series(%(at)s + make_interval(secs => %(first)s), %(at)s + interval '120 seconds', interval '50 milliseconds') AS t
        WHERE (SELECT count(*) FROM pgq.job_executions
               WHERE outcome = 'completed' AND finished_at >= t
                 AND finished_at < t + make_interval(secs => %(window)s)) >= %(share)s * base.per_window
          AND t + make_interval(secs => %(window)s) <= (SELECT max(finished_at) FROM pgq.job_executions)
        ORDER BY t LIMIT 1""", {"at": at, "window": window, "share": share, "first": first}).fetchone()
    return round(first, 2), None if full is None else round(full[0], 2)


# ---------------------------------------------------------------- worker hosts in network namespaces
class NetworkUnavailable(RuntimeError):
    """Network namespaces or veth pairs cannot be made here (the message says what is missing)."""


# The hosts' links use 198.18.0.0/15, the range set aside for benchmark test networks (RFC 2544):
# the addresses exist only on veth pairs between this machine's own namespaces.
SUBNET = "198.18.0.0/15"


@dataclass
class Link:
    """One veth pair between the root namespace (the services' side) and a worker host."""

    host_if: str
    service_ip: str  # the root namespace's end: a service listens here
    worker_ip: str  # the worker host's end


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise NetworkUnavailable(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")


def require_network_namespaces() -> None:
    """Fail with a clear message unless this process can make namespaces and veth pairs."""
    if os.geteuid() != 0:
        raise NetworkUnavailable("the partition scenarios need root (CAP_NET_ADMIN) to create network namespaces "
                                 "and veth pairs (`ip netns add`, `ip link add ... type veth`)")
    if shutil.which("ip") is None:
        raise NetworkUnavailable("the partition scenarios need the `ip` command: apt-get install iproute2")


def sweep_dead_hosts() -> None:
    """Delete namespaces that a killed test run left behind (named ``pgqc<pid>h<n>``, pid gone)."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30).stdout
    for name in re.findall(r"^(pgqc(\d+)h\d+)", listing, re.M):
        if not Path(f"/proc/{name[1]}").exists():
            subprocess.run(["ip", "netns", "del", name[0]], capture_output=True, timeout=30)


class NetHost:
    """A worker host: a network namespace with one veth link per service (``pg``, ``redis``).

    ``cut(service)`` takes the root namespace's end of that link down: the host's packets to
    that service go nowhere (its TCP connections hang, new ones fail), the other link works.
    ``heal(service)`` brings it back. ``destroy()`` deletes the namespace, which deletes its
    veth pairs with it."""

    def __init__(self, index: int, services: tuple[str, ...] = ("pg", "redis")) -> None:
        self.name = f"pgqc{os.getpid()}h{index}"
        self.links: dict[str, Link] = {}
        base = (os.getpid() % 250) * 256 + index * 32  # a /27 per host within 198.18.0.0/15
        _ip("netns", "add", self.name)
        try:
            _ip("-n", self.name, "link", "set", "lo", "up")
            for j, service in enumerate(services):
                offset = base + j * 4
                net = f"198.{18 + offset // 65536}.{offset // 256 % 256}.{offset % 256}"
                prefix = net.rsplit(".", 1)[0]
                last = int(net.rsplit(".", 1)[1])
                link = Link(f"{self.name}{service[0]}", f"{prefix}.{last + 1}", f"{prefix}.{last + 2}")
                inner = f"{self.name}{service[0]}x"[-15:]
                _ip("link", "add", link.host_if, "type", "veth", "peer", "name", inner)
                _ip("link", "set", inner, "netns", self.name)
                _ip("addr", "add", f"{link.service_ip}/30", "dev", link.host_if)
                _ip("link", "set", link.host_if, "up")
                _ip("-n", self.name, "addr", "add", f"{link.worker_ip}/30", "dev", inner)
                _ip("-n", self.name, "link", "set", inner, "up")
                self.links[service] = link
        except NetworkUnavailable:
            self.destroy()
            raise

    @property
    def prefix(self) -> list[str]:
        """The command prefix that runs a process on this host."""
        return ["ip", "netns", "exec", self.name]

    def cut(self, service: str) -> None:
        _ip("link", "set", self.links[service].host_if, "down")

    def heal(self, service: str) -> None:
        _ip("link", "set", self.links[service].host_if, "up")

    def destroy(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)
        for link in self.links.values():
            subprocess.run(["ip", "link", "del", link.host_if], capture_output=True, timeout=30)
