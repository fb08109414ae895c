"""TLS and credentials (issue 14): Postgres with ``sslmode=verify-full`` against a test
CA, Redis over TLS with an ACL user (the default user off), and no secret in the
logs, the errors or ``pgq status``.

The scenario owns its servers: a Postgres cluster (``chaos_cluster.Cluster``) with
``ssl = on``, a certificate for 127.0.0.1 signed by a CA the test makes with the
openssl CLI, and ``hostssl``/scram-sha-256 as the only way in for the application
role; a redis-server with ``--tls-port`` only. Workers run jobs through both (the
Redis path really used), then the same commands run with a wrong password and a
wrong CA: each fails with a clear message, and no output of any run holds a password.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import pgq
from chaos_cluster import Cluster
from pgq.migrate import upgrade
from redis_service import OwnedRedis
from redis_topology import TlsFiles, tls_redis

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.redis]

PG_SECRET = "pg-S3cret-never-shown"
REDIS_SECRET = "redis-S3cret-never-shown"
WRONG = "wrong-S3cret-never-shown"
SECRETS = (PG_SECRET, REDIS_SECRET, WRONG)


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return TlsFiles.make(tmp_path)


@pytest.fixture
def ssl_cluster(tls: TlsFiles) -> Iterator[Cluster]:
    """A Postgres cluster reachable by the role ``pgq_app`` only over TLS, with a password."""
    cluster = Cluster()
    try:
        cluster.init()
        for name in ("server.crt", "server.key"):
            shutil.copy(tls.directory / name, cluster.data / name)
            if cluster.run_as:
                entry = pwd.getpwnam(cluster.run_as)
                os.chown(cluster.data / name, entry.pw_uid, entry.pw_gid)
        with (cluster.data / "postgresql.conf").open("a") as f:
            f.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
                    "password_encryption = 'scram-sha-256'\n")
        hba = cluster.data / "pg_hba.conf"
        hba.write_text("hostssl all pgq_app 127.0.0.1/32 scram-sha-256\nhost all pgq_app 127.0.0.1/32 reject\n"
                       + hba.read_text())
        cluster.start()
        with cluster.admin() as admin:
            admin.execute(f"CREATE ROLE pgq_app LOGIN SUPERUSER PASSWORD '{PG_SECRET}'")
            admin.execute("CREATE DATABASE pgq_tls OWNER pgq_app")
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def tls_server(tls: TlsFiles) -> Iterator[OwnedRedis]:
    server = tls_redis(tls, "pgqapp", REDIS_SECRET, "tls")
    try:
        yield server.start()
    finally:
        server.stop()


def pg_url(cluster: Cluster, ca: Path, password: str = PG_SECRET) -> str:
    return (f"postgresql://pgq_app:{password}@127.0.0.1:{cluster.port}/pgq_tls"
            f"?sslmode=verify-full&sslrootcert={ca}")


def redis_url(server: OwnedRedis, ca: Path, password: str = REDIS_SECRET) -> str:
    return f"rediss://pgqapp:{password}@127.0.0.1:{server.port}/0?ssl_ca_certs={ca}"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``pgq -v ARGS`` in a process of its own with ``env``; its whole output is checked for secrets."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("PGQ_")} | env
    done = subprocess.run([sys.executable, "-m", "pgq.cli", "-v", *args], capture_output=True, text=True,
                          timeout=120, env=full)
    for secret in SECRETS:
        assert secret not in done.stdout + done.stderr, f"pgq {' '.join(args)} printed a password"
    return done


def test_verify_full_postgres_and_tls_redis_with_an_acl_user_run_jobs_and_never_show_a_secret(
    ssl_cluster: Cluster, tls_server: OwnedRedis, tls: TlsFiles, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    url, rurl = pg_url(ssl_cluster, tls.ca), redis_url(tls_server, tls.ca)
    env = {"PGQ_DATABASE_URL": url, "PGQ_REDIS_URL": rurl, "PGQ_REDIS_PREFIX": "tls"}
    assert cli(env, "migrate").returncode == 0
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0]
    settings = pgq.Settings(database_url=url, redis_url=rurl, redis_prefix="tls", redis_poll_interval_seconds=600.0,
                            poll_interval_seconds=0.2)
    upgrade(settings)  # already migrated: a no-op through verify-full
    ran: list[int] = []
    with pgq.connect(settings=settings, strict_tasks=False) as q:
        q.task(name="t")(lambda n: ran.append(n))
        q.enqueue_many([{"task": "t", "payload": {"n": n}} for n in range(200)])
        worker = q.worker(queues=["default"], concurrency=4, install_signal_handlers=False)
        worker.run(burst=True)
    assert sorted(ran) == list(range(200))
    assert worker.counters.extra.get("redis_claimed", 0) > 0, "the TLS Redis was not used"
    status = cli(env, "status", "--json")
    assert status.returncode == 0 and '"reachable": true' in status.stdout

    # Wrong credentials and a wrong CA: clear failures, and still no secret anywhere.
    bad_redis = cli({**env, "PGQ_REDIS_URL": redis_url(tls_server, tls.ca, WRONG)}, "status", "--json")
    assert '"reachable": false' in bad_redis.stdout and "***" in bad_redis.stdout
    bad_pg = cli({**env, "PGQ_DATABASE_URL": pg_url(ssl_cluster, tls.ca, WRONG)}, "status")
    assert bad_pg.returncode != 0 and "password authentication failed" in bad_pg.stderr
    other_ca = TlsFiles.make(_fresh(tmp_path / "other"))
    bad_ca = cli({**env, "PGQ_DATABASE_URL": pg_url(ssl_cluster, other_ca.ca)}, "status")
    assert bad_ca.returncode != 0 and "certificate verify failed" in bad_ca.stderr
    plain = cli({**env, "PGQ_DATABASE_URL": pg_url(ssl_cluster, tls.ca).replace("verify-full", "disable")}, "status")
    assert plain.returncode != 0 and "reject" in plain.stderr  # no TLS, no way in
    with pytest.raises(pgq.errors.PgqError) as failed:
        pgq.connect(settings=settings.replace(database_url=pg_url(ssl_cluster, tls.ca, WRONG))).enqueue("t", {})
    assert WRONG not in str(failed.value)

    captured = capfd.readouterr()
    logged = caplog.text + captured.out + captured.err
    for secret in SECRETS:
        assert secret not in logged


def _fresh(path: Path) -> Path:
    path.mkdir()
    return path
