"""Worker hosts on a network that partitions (issue 14, item 2).

Each worker host is a network namespace of its own (``chaos_topology.NetHost``)
joined to this machine's root namespace by one veth pair per service: the
workers reach Postgres and Redis at the root end's address (198.18.0.0/15, on
this machine only). A cut takes one link down mid-run; needs root
(CAP_NET_ADMIN) and ``ip`` (iproute2), and fails with a clear message without them.

- Host cut off from Postgres (link down) while it runs jobs: its heartbeats stop,
  so after the stale limit the maintenance leader (a worker on another host)
  rescues its jobs and they run elsewhere. When the link heals, the handlers it
  kept running find their completions refused by the fence (``late`` in the
  audit), its heartbeat tells it it was marked stale and which jobs it lost, it
  stops their handlers and goes back to work.
- Redis mode, a host that reaches Redis but not Postgres, and one that reaches
  Postgres but not Redis: nothing is lost or run twice at once, and the host
  comes back to work when its link heals (the second one carries on through
  Postgres meanwhile).

Every namespace, server and process is removed at the end, also when a test fails.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from chaos_cluster import Cluster, ClusterUnavailable
from chaos_harness import LISTEN_ROLE, ChaosRun, Mode, Scale, WorkerProc
from chaos_report import record
from chaos_topology import SUBNET, NetHost, NetworkUnavailable, prepare_database, require_network_namespaces, \
    sweep_dead_hosts
from redis_service import NoRedis, OwnedRedis

TEMPLATE = "partition_template"
LONG_MS = 4000  # jobs still running when the cut host comes back


@dataclass
class Topology:
    """Two worker hosts, and the Postgres and Redis they reach over their links."""

    hosts: list[NetHost]
    cluster: Cluster
    redis: OwnedRedis
    names: list[str] = field(default_factory=list)

    def db_url(self, host: NetHost, url: str, role: str = "postgres") -> str:
        """``url`` as a worker on ``host`` reaches it: over the host's Postgres link, as ``role``."""
        return url.replace(f"//postgres@127.0.0.1:{self.cluster.port}/",
                           f"//{role}@{host.links['pg'].service_ip}:{self.cluster.port}/", 1)

    def redis_url(self, host: NetHost) -> str:
        return f"redis://{host.links['redis'].service_ip}:{self.redis.port}/0"


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    try:
        require_network_namespaces()
        sweep_dead_hosts()
    except NetworkUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)  # an error, not a skip
    hosts: list[NetHost] = []
    cluster: Cluster | None = None
    redis: OwnedRedis | None = None
    try:
        hosts = [NetHost(1), NetHost(2)]
        addresses = ",".join(["127.0.0.1", *(h.links["pg"].service_ip for h in hosts)])
        cluster = Cluster(settings={"listen_addresses": f"'{addresses}'"}, hba=(f"host all all {SUBNET} trust",))
        cluster.init()
        cluster.start()
        prepare_database(cluster, TEMPLATE)
        with cluster.admin() as admin:
            admin.execute(f"ALTER DATABASE {TEMPLATE} IS_TEMPLATE true")
        redis = OwnedRedis(bind=("127.0.0.1", *(h.links["redis"].service_ip for h in hosts))).start()
        yield Topology(hosts, cluster, redis)
    except (NetworkUnavailable, ClusterUnavailable, NoRedis) as exc:
        pytest.fail(str(exc), pytrace=False)
    finally:
        if redis is not None:
            redis.stop()
        if cluster is not None:
            cluster.destroy()
        for host in hosts:
            host.destroy()


@pytest.fixture
def db(topology: Topology, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"partition_{os.getpid()}_{len(topology.names)}"
    topology.names.append(name)
    for host in topology.hosts:  # a failed test may have left a link down
        host.heal("pg")
        host.heal("redis")
    yield topology.cluster.create_database(name, template=TEMPLATE)
    topology.cluster.drop_database(name)


def on_host(run: ChaosRun, topo: Topology, host: NetHost, url: str) -> WorkerProc:
    """Start a worker on ``host``: it reaches Postgres (and Redis) over the host's links."""
    env = {"PGQ_DATABASE_URL": topo.db_url(host, url), "PGQ_LISTEN_DATABASE_URL": topo.db_url(host, url, LISTEN_ROLE)}
    if run.redis is not None:
        env["PGQ_REDIS_URL"] = topo.redis_url(host)
    return run.start_worker(env, prefix=host.prefix)


def make_run(topo: Topology, db: str, mode: Mode, tmp: Path, scale: Scale, name: str, seed: int,
             placement: list[int], rate: float | None = None) -> tuple[ChaosRun, list[WorkerProc]]:
    """A run whose workers sit on the hosts given by ``placement`` (host index per worker);
    ``rate``: jobs offered per second (else as fast as the workers take them)."""
    run = ChaosRun(topo.cluster, db, mode, tmp, name=name, scale=scale, jobs=scale.pick(500, 4000), workers=0,
                   concurrency=4, seed=seed, backlog=48, redis=topo.redis, rate=rate, chunk=10 if rate else 50)
    workers = [on_host(run, topo, topo.hosts[i], db) for i in placement]
    return run, workers


def held_jobs(run: ChaosRun, worker: WorkerProc) -> list[int]:
    return [r[0] for r in run.db.query("SELECT j.id FROM pgq.jobs j JOIN pgq.workers w ON w.id = j.worker_id"
                                       " WHERE w.pid = %s AND j.status = 'running'", (worker.pid,))]


def wait_rescued(run: ChaosRun, worker: WorkerProc, held: list[int]) -> None:
    """``worker`` is marked stale and the jobs it held were taken from it (rescued, or finished)."""
    run.poll(lambda: run.db.one("SELECT status::text FROM pgq.workers WHERE pid = %s", (worker.pid,)) == "stale",
             "the cut-off worker to be marked stale", timeout=30)
    run.poll(lambda: run.db.one("SELECT coalesce(bool_and(j.status IN ('completed', 'dead')"
                                " OR j.worker_id IS DISTINCT FROM w.id), true)"
                                " FROM pgq.jobs j, pgq.workers w WHERE j.id = ANY(%s) AND w.pid = %s",
                                (held, worker.pid)), "its jobs to be rescued", timeout=60)


def wait_back_at_work(run: ChaosRun, worker: WorkerProc) -> None:
    since = run.db.now()
    run.poll(lambda: run.db.one("SELECT status::text FROM pgq.workers WHERE pid = %s", (worker.pid,)) == "active",
             "the healed worker to be active again", timeout=60)
    if run.remaining() > 30:
        run.poll(lambda: run.db.one("SELECT count(*) FROM chaos.runs WHERE pid = %s AND started_at > %s",
                                    (worker.pid, since)), "the healed worker to run jobs again", timeout=60)


@pytest.mark.parametrize("mode", ["postgres"], indirect=True)
def test_host_cut_off_is_rescued_fenced_and_stops_its_handlers(
        topology: Topology, db: str, mode: Mode, scale: Scale, tmp_path: Path, pytestconfig: pytest.Config) -> None:
    run, workers = make_run(topology, db, mode, tmp_path, scale, "partitioned host (link down)", 21, [0, 1, 1])
    try:
        run.start()
        rescued_after: list[float] = []  # seconds from the cut until its jobs were taken from it
        for _ in range(scale.pick(1, 3)):
            run.at_random_progress(100, 200)
            run.enqueue_extra(6, f"long-{len(run.faults)}", ms=LONG_MS)
            # The host to cut: one whose worker runs a long job (it will still run when the link heals).
            victim = run.poll(lambda: next((w for w in workers if w.pid in _in_long_handler(run)), None),
                              "a worker running a long job")
            host = topology.hosts[0] if victim is workers[0] else topology.hosts[1]
            held = held_jobs(run, victim)
            ids = run.worker_ids_of(victim)
            at = run.db.now()
            host.cut("pg")
            wait_rescued(run, victim, held)
            rescued_after.append((run.db.now() - at).total_seconds())
            host.heal("pg")
            # Recovery counts from the cut: the other hosts must not need the heal to carry on.
            run.add_fault("host cut off from Postgres", at, at, ids)
            wait_back_at_work(run, victim)
        report = run.finish()
        record(pytestconfig, {**run.summary(report), "rescued_after_max_s": round(max(rescued_after), 2)})
        cut_short = _cut_short_runs(run)
    finally:
        run.close()

    assert report.violations == [], "\n".join(report.violations)
    assert report.lost == 0 and report.duplicated == 0
    # Its handlers went on during the cut; what they returned after it was refused by the fence.
    assert report.late >= len(run.faults)
    assert cut_short >= 1, "the healed worker stops the handlers of the jobs it lost"
    logs = "".join(w.log.read_text(errors="replace") for w in workers)
    # It learnt it had been marked stale: from its first heartbeat after the heal, or from a
    # claim refused first (the LISTEN thread of an idle worker claims as soon as it reconnects).
    assert re.search(r"had been marked stale; its jobs were rescued|is stale, only an active worker may claim", logs)
    assert len(run.workers) == 3, "no worker died (none was replaced)"


def _in_long_handler(run: ChaosRun) -> set[int]:
    """Pids of the workers whose handler of a long job has started and is still running."""
    return {r[0] for r in run.db.query(
        "SELECT r.pid FROM chaos.runs r JOIN pgq.jobs j ON j.id = r.job_id AND j.attempts = r.attempt"
        " WHERE r.ended_at IS NULL AND j.status = 'running' AND (j.payload->>'ms')::int = %s", (LONG_MS,))}


def _cut_short_runs(run: ChaosRun) -> int:
    """Runs of long jobs that ended well before their time: only a worker told that it lost the
    job stops its handler early (the cut-off worker, once its heartbeat gets through)."""
    return int(run.db.one(
        "SELECT count(*) FROM chaos.runs r JOIN pgq.jobs j ON j.id = r.job_id"
        " WHERE (j.payload->>'ms')::int = %s AND r.ended_at - r.started_at < %s * interval '1 ms'",
        (LONG_MS, LONG_MS - 500)))


@pytest.mark.parametrize("mode", ["redis"], indirect=True)
@pytest.mark.parametrize("service", ["pg", "redis"], ids=["reaches-redis-not-postgres", "reaches-postgres-not-redis"])
def test_host_cut_off_from_one_service(topology: Topology, db: str, mode: Mode, scale: Scale, service: str,
                                       tmp_path: Path, pytestconfig: pytest.Config) -> None:
    other = "Postgres" if service == "pg" else "Redis"
    # Offered at 50 jobs/s, so that work keeps coming while the host is cut off (about 5 s).
    run, workers = make_run(topology, db, mode, tmp_path, scale, f"host cut off from {other} only", 22, [0, 1, 1],
                            rate=50.0)
    victim, host = workers[0], topology.hosts[0]
    try:
        run.start()
        run.at_random_progress(50, 80)
        held, ids = held_jobs(run, victim), run.worker_ids_of(victim)
        at = run.db.now()
        host.cut(service)
        if service == "pg":
            wait_rescued(run, victim, held)
        else:
            # It carries on through Postgres: it claims and runs jobs while Redis is out of its reach.
            run.poll(lambda: run.db.one("SELECT count(*) FROM chaos.runs WHERE pid = %s AND started_at > %s"
                                        " AND via = 'postgres'", (victim.pid, at)) >= 3,
                     "the host without Redis to run jobs claimed from Postgres", timeout=60)
        run.wait_finished(run.finished() + 30)
        host.heal(service)
        fault = run.add_fault(f"host cut off from {other}", at, at if service == "pg" else run.db.now(), ids)
        fault.back_on_redis = service == "redis"
        wait_back_at_work(run, victim)
        report = run.finish()
        record(pytestconfig, run.summary(report))
    finally:
        run.close()

    assert report.violations == [], "\n".join(report.violations)
    assert report.lost == 0 and report.duplicated == 0
    assert len(run.workers) == 3, "no worker died (none was replaced)"
    # The cut-off host came back to work: it ran jobs again (and, cut from Redis, claimed through it again).
    assert run.faults[0].recovered_in is not None
