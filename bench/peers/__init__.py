"""The peers: pgq's bench workloads run through procrastinate and pgqueuer.

pgqueuer installs a console script named ``pgq``, which would replace pgq's own
command, so the peers never enter pgq's environment. :func:`ensure_peer_env`
builds (once, then reuses) a virtualenv of their own under the user's cache
directory; :func:`run_peer` runs one workload through one peer there, as a
subprocess, and returns the JSON object the peer script prints.

Only the standard library and pgq are imported here. The scripts next to this
file (``pgqueuer_bench.py``, ``procrastinate_bench.py`` and their shared
``_peer_common.py``) run inside the peers' virtualenv and never import pgq.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pgq.errors import ConfigurationError, PgqError

PEERS = ("procrastinate", "pgqueuer")
WORKLOADS = ("enqueue", "throughput", "latency")

# Minimum versions the peer scripts were written and checked against, capped
# below the next major version (whose API may differ).
REQUIREMENTS = (
    "procrastinate>=3.10,<4",
    "pgqueuer>=1.6,<2",
    "asyncpg>=0.30",
    "uvloop>=0.21",
    "psycopg[binary]>=3.2",
    "psycopg-pool>=3.2",
)
_VERSIONED = ("procrastinate", "pgqueuer", "asyncpg", "uvloop", "psycopg", "psycopg-pool")
_MARKER = "pgq-bench-peers.json"
_TAIL_LINES = 40


class PeerEnvError(ConfigurationError):
    """The peers' virtualenv could not be built; the message carries the tail of the output."""


class PeerRunError(PgqError):
    """A peer script failed or printed no result; the message carries the tail of its stderr."""


def peer_env_dir() -> Path:
    """Where the peers' virtualenv lives: ``$XDG_CACHE_HOME/pgq/bench-peers-venv`` (default ``~/.cache``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "pgq" / "bench-peers-venv"


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _fingerprint(base_python: str) -> str:
    spec = json.dumps({"requirements": REQUIREMENTS, "python": base_python}, sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def _tail(text: str, lines: int = _TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@contextlib.contextmanager
def _locked(venv: Path) -> Iterator[None]:
    """Serialise builders (two `pgq bench` at once must not build the same venv twice)."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_marker(venv: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((venv / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _run_step(what: str, cmd: list[str], venv: Path, timeout: float) -> str:
    try:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout, env=_clean_env(), check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        output = getattr(exc, "output", None) or ""
        if isinstance(output, bytes):
            output = output.decode(errors="replace")
        shutil.rmtree(venv, ignore_errors=True)
        raise PeerEnvError(f"could not build the bench peers' virtualenv at {venv}: {what} failed: {exc}"
                           + (f"\n{_tail(output)}" if output else "")) from exc
    if done.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)  # the next call starts afresh
        raise PeerEnvError(
            f"could not build the bench peers' virtualenv at {venv}: {what} exited with "
            f"{done.returncode}:\n{_tail(done.stdout)}")
    return done.stdout


def ensure_peer_env(*, venv_dir: str | os.PathLike[str] | None = None, rebuild: bool = False,
                    log: Callable[[str], None] | None = None, pip_timeout: float = 1800.0) -> dict[str, Any]:
    """Build the peers' virtualenv if it is missing or out of date; return what it holds.

    Returns ``{"venv": path, "python": interpreter, "versions": {package: version}}``.
    The first call creates ``venv_dir`` (default :func:`peer_env_dir`) with this
    Python's ``venv`` module and pip-installs :data:`REQUIREMENTS` into it; later
    calls reuse it while the requirements and base Python are unchanged. Raises
    :class:`PeerEnvError` (a :class:`pgq.ConfigurationError`) with the tail of
    pip's output when it cannot be built (no network to PyPI, no ``venv``
    module, a failing build), and leaves nothing half-built behind.
    """
    venv = Path(venv_dir) if venv_dir is not None else peer_env_dir()
    python = _venv_python(venv)
    fingerprint = _fingerprint(f"{sys.version_info[0]}.{sys.version_info[1]}")
    say = log or (lambda _msg: None)
    with _locked(venv):
        marker = _read_marker(venv)
        if (not rebuild and marker is not None and marker.get("fingerprint") == fingerprint
                and python.exists()):
            return {"venv": str(venv), "python": str(python), "versions": marker.get("versions", {})}
        shutil.rmtree(venv, ignore_errors=True)
        say(f"building the bench peers' virtualenv at {venv} (once; pip installs procrastinate and pgqueuer)")
        _run_step("python -m venv", [sys.executable, "-m", "venv", str(venv)], venv, timeout=300)
        _run_step("pip install", [str(python), "-m", "pip", "install", "--disable-pip-version-check",
                                  "--no-input", *REQUIREMENTS], venv, timeout=pip_timeout)
        probe = ("import importlib.metadata as m, json; "
                 f"print(json.dumps({{p: m.version(p) for p in {list(_VERSIONED)!r}}}))")
        out = _run_step("checking the installed versions", [str(python), "-c", probe], venv, timeout=120)
        versions = json.loads(out.strip().splitlines()[-1])
        (venv / _MARKER).write_text(json.dumps(
            {"fingerprint": fingerprint, "requirements": REQUIREMENTS, "versions": versions}, indent=2),
            encoding="utf-8")
        say("bench peers: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
        return {"venv": str(venv), "python": str(python), "versions": versions}


def _clean_env() -> dict[str, str]:
    """The caller's environment, minus what would leak pgq's interpreter into the peers' one."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")}
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def script_path(peer: str) -> Path:
    """The peer's script (in a checkout: bench/peers/; in the wheel: pgq/_bench/peers/)."""
    return Path(__file__).resolve().with_name(f"{peer}_bench.py")


def run_peer(peer: str, workload: str, url: str, *, timeout: float | None = 3600.0,
             venv_dir: str | os.PathLike[str] | None = None, on_stderr: Callable[[str], None] | None = None,
             **settings: Any) -> dict[str, Any]:
    """Run one bench workload through one peer; return its result as a dict.

    ``peer`` is "procrastinate" or "pgqueuer"; ``workload`` is "enqueue",
    "throughput" or "latency"; ``url`` points at the PostgreSQL server (any
    database the user may CREATE DATABASE from, e.g. ``.../postgres``): the peer
    gets a database of its own there (``pgq_peer_<peer>``), created at the start
    and dropped at the end. ``settings`` are the workload's knobs (``jobs``,
    ``workers``, ``concurrency``, ``latency_jobs``, ``single_jobs``,
    ``bulk_jobs``, peer-specific ones such as ``batch_size``; see README.md or
    ``<peer>_bench.py --list-settings``); unknown ones are an error. Each line the
    script writes to stderr goes to ``on_stderr`` if given (progress, warnings).

    The result carries the figures (``enqueue_single_jobs_per_s``,
    ``enqueue_bulk_jobs_per_s``, ``process_jobs_per_s``, ``pickup_latency_ms``,
    ``pg_cost`` ...), the peer's exact ``config`` and ``versions``, the settings,
    Postgres settings and machine. Raises :class:`pgq.ConfigurationError` for a
    bad peer, workload or setting type, :class:`PeerEnvError` when the
    virtualenv cannot be built and :class:`PeerRunError` when the run fails.
    """
    if peer not in PEERS:
        raise ConfigurationError(f"unknown bench peer {peer!r}; choose from {', '.join(PEERS)}")
    if workload not in WORKLOADS:
        raise ConfigurationError(f"unknown bench workload {workload!r}; choose from {', '.join(WORKLOADS)}")
    try:
        request = json.dumps({"workload": workload, "url": url, "settings": settings})
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"bench peer settings must be JSON values: {exc}") from exc
    env = ensure_peer_env(venv_dir=venv_dir, log=on_stderr)
    cmd = [env["python"], str(script_path(peer)), workload, "--stdin"]
    stderr_tail: deque[str] = deque(maxlen=_TAIL_LINES)
    try:
        # A session of its own: the script forks worker processes, and a timeout or
        # an interrupt must reach all of them (killpg), not only the script.
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=_clean_env(), cwd=str(script_path(peer).parent),
                                start_new_session=True)
    except OSError as exc:
        raise PeerRunError(f"could not start {peer}'s bench script with {env['python']}: {exc}") from exc

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            stderr_tail.append(line.rstrip("\n"))
            if on_stderr is not None:
                on_stderr(line.rstrip("\n"))

    reader = threading.Thread(target=pump, name=f"{peer}-stderr", daemon=True)
    reader.start()
    timed_out = threading.Event()

    def signal_group(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def expire() -> None:
        timed_out.set()
        signal_group(signal.SIGKILL)

    timer = threading.Timer(timeout, expire) if timeout else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        assert proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(BrokenPipeError):  # the script died early: reported below
            proc.stdin.write(request)
            proc.stdin.close()
        stdout = proc.stdout.read()
        proc.wait()
    finally:
        if timer is not None:
            timer.cancel()
        if proc.poll() is None:  # interrupted (Ctrl-C): do not leave the peer's workers running
            signal_group(signal.SIGTERM)  # the script stops its workers and drops its database
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
            signal_group(signal.SIGKILL)
    reader.join(5)
    if timed_out.is_set():
        raise PeerRunError(f"{peer} {workload} did not finish within {timeout} s:\n" + "\n".join(stderr_tail))
    result = _last_json_object(stdout)
    if proc.returncode == 2 and any(": error: " in line for line in stderr_tail):
        # argparse's exit code: a setting the script does not know, or a malformed value
        raise ConfigurationError(f"{peer} {workload}: " + "\n".join(stderr_tail))
    if proc.returncode != 0 or result is None:
        raise PeerRunError(f"{peer} {workload} failed (exit code {proc.returncode}):\n" + "\n".join(stderr_tail))
    result["peer_env"] = {"venv": env["venv"], "python": env["python"]}
    return result


def _last_json_object(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


__all__ = ["PEERS", "REQUIREMENTS", "WORKLOADS", "PeerEnvError", "PeerRunError", "ensure_peer_env",
           "peer_env_dir", "run_peer", "script_path"]
