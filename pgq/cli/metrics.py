"""``pgq metrics``: serve the queue-level Prometheus metrics read from Postgres.

Parses the options, starts ``pgq.health.queue_exporter``'s HTTP server and
waits for SIGTERM or Ctrl-C (``--once`` prints one scrape instead). What the
metrics are is the exporter's business (docs/metrics.md).
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

from pgq.cli.common import Context, handle_errors


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), default=9187, show_default=True,
              help="TCP port to serve /metrics on.")
@click.option("--address", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--once", is_flag=True, help="Print one scrape (Prometheus text format) and exit.")
@click.pass_obj
@handle_errors
def metrics(obj: Context, port: int, address: str, once: bool) -> None:
    """Serve queue metrics for Prometheus: depth by queue x status x priority, oldest due age,
    dead letters, workers by status and health (read from Postgres at each scrape).

    A scrape while the database is down answers pgq_up 0. Runs until SIGTERM or Ctrl-C.
    Needs pgq[prometheus]. Each worker serves its own metrics: `pgq worker --metrics-port`.
    """
    settings = obj.settings()
    from pgq.health.queue_exporter import scrape_once, serve_queue_metrics

    if once:
        click.echo(scrape_once(settings), nl=False)
        return
    server = serve_queue_metrics(settings, port, address)
    click.echo(f"serving pgq metrics on http://{address}:{server.server_address[1]}/metrics", err=True)
    stop = threading.Event()

    def handle(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop.wait(3600):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.shutdown()
        server.server_close()
