"""pgq without its metrics and tracing extras: it imports and runs, and asking for them says what to install.

Runs in a fresh interpreter where ``prometheus_client`` and ``opentelemetry``
cannot be imported (``sys.modules[name] = None``), as after a plain
``pip install pgq``.
"""

from __future__ import annotations

import json
import subprocess
import sys

_PROGRAM = """
import json, sys
for name in ("prometheus_client", "opentelemetry"):
    sys.modules[name] = None
import pgq, pgq.cli, pgq.worker
from pgq.cli import main

settings = pgq.Settings(database_url="postgresql://nobody@127.0.0.1:1/none")
queue = pgq.Queue(settings)
said = {}
try:
    queue.worker(metrics_port=9100)
except pgq.ConfigurationError as exc:
    said["metrics"] = str(exc)
try:
    pgq.Queue(settings.replace(tracing=True))
except pgq.ConfigurationError as exc:
    said["tracing"] = str(exc)
said["plain_worker"] = queue.worker(install_signal_handlers=False).metrics_port
said["loaded"] = sorted(m for m in sys.modules if m.startswith(("prometheus", "opentelemetry"))
                        and sys.modules[m] is not None)
print(json.dumps(said))
"""


def test_pgq_runs_without_the_extras_and_names_them_when_asked() -> None:
    result = subprocess.run([sys.executable, "-c", _PROGRAM], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    said = json.loads(result.stdout)
    assert "pip install 'pgq[prometheus]'" in said["metrics"]
    assert "pip install 'pgq[tracing]'" in said["tracing"]
    assert said["plain_worker"] is None
    assert said["loaded"] == []


def test_importing_pgq_loads_neither_extra() -> None:
    program = ("import sys, pgq, pgq.cli, pgq.worker; "
               "print([m for m in sys.modules if m.startswith(('prometheus', 'opentelemetry'))])")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
