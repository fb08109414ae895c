"""A long-running transaction holds back the xmin horizon while the queue runs.

Another session opens a transaction, takes a transaction id and stays idle in
it for the whole run. No row version deleted or updated after it started can
be vacuumed away, so the claim and outcome statements wade through an
ever-growing number of dead row versions of ``pgq.jobs``: throughput may drop,
correctness must not. The test proves the horizon was really held (VACUUM
reports dead row versions it may not remove yet) and audits the run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from chaos_harness import ChaosRun, Scale, held_transaction
from chaos_report import record

NOT_REMOVABLE = re.compile(r"(\d+) are dead but not yet removable")


def test_queue_stays_correct_while_a_long_transaction_holds_the_xmin_horizon(
        chaos: Callable[..., ChaosRun], scale: Scale, pytestconfig: pytest.Config) -> None:
    run = chaos(name="xmin horizon held", jobs=scale.pick(3000, 12000), workers=3, concurrency=4, seed=5)
    with held_transaction(run.url, "SELECT txid_current()") as held:
        at = run.db.now()
        horizon = run.db.one("SELECT backend_xid FROM pg_stat_activity WHERE pid = %s", (held.info.backend_pid,))
        assert horizon is not None
        run.start()
        run.wait_finished(run.total // 2)
        kept = _vacuum_not_removable(run.url)
        run.wait_finished(run.total)
        assert run.db.one("SELECT backend_xid FROM pg_stat_activity WHERE pid = %s",
                          (held.info.backend_pid,)) == horizon  # held to the end
    run.add_fault("xmin horizon held", at, run.db.now(), [])
    report = run.finish()
    summary = run.summary(report)
    summary["dead_rows_kept_by_the_horizon"] = kept
    record(pytestconfig, summary)

    assert kept > run.total // 4  # the horizon really kept what the first half of the run left behind
    assert report.violations == [], "\n".join(report.violations)
    assert report.lost == 0 and report.duplicated == 0


def _vacuum_not_removable(url: str) -> int:
    """VACUUM pgq.jobs; return how many dead row versions it had to leave for the held horizon."""
    notices: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        def keep(diag: Any) -> None:
            notices.append(str(diag.message_primary))

        conn.add_notice_handler(keep)
        conn.execute("VACUUM (VERBOSE) pgq.jobs")
    counts = [int(m.group(1)) for text in notices for m in NOT_REMOVABLE.finditer(text)]
    assert counts, f"VACUUM VERBOSE said nothing about dead rows: {notices}"
    return counts[0]
