"""A process running the maintenance leader's cron service, for the tests that ``kill -9`` one.

``python _cron_proc.py DATABASE_URL NAME``: connects with application_name
``NAME`` and loops: read the injected time from ``public.cron_clock`` (the test
moves it; a NULL time stops the process), run ``CronService.run_once`` at that
time (each due schedule one transaction under the maintenance leader lock, as
the leader's round does), then wait for the clock to move (LISTEN on
``cron_clock``, with a short poll as the safety net). Not a test module.
"""

from __future__ import annotations

import sys

import psycopg

from pgq.scheduling.cron import CronService


def main(url: str, name: str) -> None:
    service = CronService("pgq")
    with psycopg.connect(url, autocommit=True, application_name=name) as conn, \
            psycopg.connect(url, autocommit=True) as listener:
        listener.execute("LISTEN cron_clock")
        print("ready", flush=True)
        while True:
            row = conn.execute("SELECT t FROM public.cron_clock").fetchone()
            if row is None or row[0] is None:
                return
            service.run_once(conn, now=row[0])
            for _ in listener.notifies(timeout=0.05, stop_after=1):
                pass


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
