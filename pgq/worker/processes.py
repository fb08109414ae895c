"""Process isolation: sync handlers run in child processes that can be killed.

A task registered with ``isolation="process"`` runs in one of the worker's
child processes instead of on a runner thread. The runner thread that starts
the job sends ``(module, qualname, job)`` to an idle child and waits for the
``Outcome``; the child imports the handler by reference (the module the
function was defined in, then its name: a module-level function), calls it
with the payload through ``executor.run_sync`` (so ``Retry``, ``Fatal``,
payload and result checks are the thread path's) and sends the outcome back.

What this buys: a job past its timeout, cancelled, or still running at the
end of the shutdown grace is really stopped: its child is killed
(``SIGKILL``), the runner thread gets its answer at once, and a fresh child is
started for the next job. A child that dies by itself (a crash, the OOM
killer) fails the job with ``HandlerProcessDied``, retried by policy.

Costs: a round trip through a pipe and pickling of the job and outcome per
job (about a millisecond, against microseconds on a thread); a child's start
(a fork of multiprocessing's fork server, then the import of the handler's
module, once per child); one Python process per process-isolated job
running at once (at most ``concurrency``), kept while the worker runs.

Children are started with the ``forkserver`` method (``spawn`` where there is
none), never ``fork``: the worker has threads, and a forked copy of a
threaded process can deadlock. They inherit the environment of the fork
server (started at the first child), ignore SIGINT (Ctrl-C reaches the
whole process group; the worker drains first), and exit when the worker
process goes away. Under systemd, ``KillMode=mixed`` sends SIGTERM to the
worker only (a child killed by a SIGTERM of its own fails its job, which is
retried).
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from pgq.executor import Failed, JobContext, Outcome, run_sync

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from pgq.job import Job

log = logging.getLogger("pgq.worker")

#: (module, qualified name) of a handler, for a child to import.
HandlerRef = tuple[str, str]


def start_method() -> str:
    """``forkserver`` where the platform has it, else ``spawn`` (never ``fork``)."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def resolve(ref: HandlerRef) -> Callable[..., Any]:
    """The handler ``ref`` names: the function, or the function of the ``pgq.Task`` the
    module binds to that name (``@q.task`` replaces the function with its Task).

    Raises ImportError or AttributeError when it cannot be found.
    """
    module, qualname = ref
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    fn = getattr(obj, "fn", None)
    if callable(fn) and hasattr(obj, "isolation"):  # a pgq.Task (not imported here: no cycle)
        obj = fn
    if not callable(obj):
        raise AttributeError(f"{module}.{qualname} is not callable")
    return obj  # type: ignore[no-any-return]


def _child_main(conn: Connection) -> None:
    """A child's loop: run jobs until the pipe closes or the worker sends None."""
    # Ctrl-C reaches the whole process group: the worker decides (it drains first).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        def watch() -> None:
            wait([parent.sentinel])  # readable once the worker process is gone
            os._exit(1)

        threading.Thread(target=watch, name="pgq-parent-watch", daemon=True).start()
    handlers: dict[HandlerRef, Callable[..., Any]] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        ref, job = message
        try:
            fn = handlers.get(ref) or handlers.setdefault(ref, resolve(ref))
        except Exception as exc:
            outcome: Outcome = Failed("HandlerNotImportable",
                                      f"cannot import {ref[0]}.{ref[1]} in the handler's process: {exc!r}")
        else:
            outcome = run_sync(fn, JobContext(job))
        conn.send(outcome)


class _Child:
    __slots__ = ("conn", "process")

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn


class ProcessPool:
    """Child processes for one worker's process-isolated jobs (thread-safe).

    ``run`` is called by runner threads (one job per child at a time; a child
    is started when none is idle); ``kill`` stops the child running a job;
    ``close`` stops them all.
    """

    def __init__(self, method: str | None = None) -> None:
        self._method = method or start_method()
        self._ctx: Any = None  # the multiprocessing context (made at the first child)
        self._lock = threading.Lock()
        self._idle: list[_Child] = []
        self._busy: dict[int, _Child] = {}  # job id -> its child
        self._killed: set[int] = set()  # job ids whose child was killed on purpose
        self._closing = False
        self.started = 0  # children started (and, below, killed) since the pool was made
        self.killed = 0

    def _start(self) -> _Child:
        if self._ctx is None:
            self._ctx = multiprocessing.get_context(self._method)
            if self._method == "forkserver":
                self._ctx.set_forkserver_preload(["pgq.worker.processes"])
        ours, theirs = self._ctx.Pipe()
        process = self._ctx.Process(target=_child_main, args=(theirs,), name="pgq-handler", daemon=True)
        process.start()
        theirs.close()  # else a dead child's pipe would never report EOF here
        with self._lock:
            self.started += 1
        return _Child(process, ours)

    def run(self, ref: HandlerRef, job: Job, cancelled: threading.Event) -> Outcome:
        """Run ``job``'s handler in a child and return its outcome (blocks the calling thread).

        ``cancelled`` is the job's ``JobContext.cancelled``: whoever stops the job sets
        it *before* calling ``kill``, so a kill that comes while the child is still
        starting is not lost.
        """
        with self._lock:
            if self._closing:
                return Failed("WorkerStopping", "the worker is stopping: the job was not started")
            child = self._idle.pop() if self._idle else None
        if child is not None and not child.process.is_alive():  # died while idle (e.g. the OOM killer)
            log.warning("an idle handler process exited with code %s; starting another", child.process.exitcode)
            child.conn.close()
            child = None
        if child is None:
            try:
                child = self._start()
            except Exception as exc:
                log.error("could not start a process for job %s: %r", job.id, exc)
                return Failed("HandlerProcessNotStarted", f"could not start a process for the handler: {exc!r}")
        with self._lock:
            self._busy[job.id] = child
            stop = cancelled.is_set() or self._closing
        if stop:
            with self._lock:
                del self._busy[job.id]
                keep = not self._closing
                if keep:
                    self._idle.append(child)
            if not keep:
                self._stop(child)
            return Failed("HandlerKilled", "the job was stopped before its handler started")
        try:
            child.conn.send((ref, job))
            outcome: Outcome = child.conn.recv()
        except (EOFError, OSError):
            return self._died(job.id, child)
        with self._lock:
            del self._busy[job.id]
            # Killed just as it answered: the answer arrived, but the child is gone.
            killed = job.id in self._killed
            self._killed.discard(job.id)
            keep = not self._closing and not killed
            if keep:
                self._idle.append(child)
        if not keep:
            self._stop(child)
        return outcome

    def _died(self, job_id: int, child: _Child) -> Outcome:
        """The child went away while it ran ``job_id``: reap it, and say why."""
        with self._lock:
            self._busy.pop(job_id, None)
            killed = job_id in self._killed
            self._killed.discard(job_id)
            closing = self._closing
        child.process.join(5)
        child.conn.close()
        code = child.process.exitcode
        if killed:
            return Failed("HandlerKilled", "the handler's process was killed (timeout or cancel)")
        if closing:
            return Failed("WorkerStopped", "the worker stopped (its shutdown grace was over) and killed the "
                                           "process running the handler")
        log.warning("the process running job %s exited with code %s", job_id, code)
        return Failed("HandlerProcessDied", f"the process running the handler exited with code {code}")

    def kill(self, job_id: int) -> bool:
        """Kill the child running ``job_id`` (its runner thread returns at once); False
        when no child runs it."""
        with self._lock:
            child = self._busy.get(job_id)
            if child is None:
                return False
            self._killed.add(job_id)
            self.killed += 1
        child.process.kill()
        return True

    def close(self) -> None:
        """Stop every child: idle ones are told to exit, busy ones are killed."""
        with self._lock:
            self._closing = True
            idle, self._idle = self._idle, []
            busy = list(self._busy.values())
        for child in busy:
            child.process.kill()
        # Dead before the worker deregisters (their runner threads reap them).
        pending = [child.process.sentinel for child in busy]
        deadline = time.monotonic() + 5.0
        while pending and (left := deadline - time.monotonic()) > 0:
            ready = wait(pending, left)
            pending = [s for s in pending if s not in ready]
        for child in idle:
            self._stop(child)

    @staticmethod
    def _stop(child: _Child) -> None:
        try:
            child.conn.send(None)
        except OSError:
            pass
        child.process.join(5)
        if child.process.is_alive():
            child.process.kill()
            child.process.join(5)
        child.conn.close()

    def pids(self) -> list[int]:
        """Process ids of the children alive now (for tests and operators)."""
        with self._lock:
            children = self._idle + list(self._busy.values())
        return [c.process.pid for c in children if c.process.pid is not None and c.process.is_alive()]
