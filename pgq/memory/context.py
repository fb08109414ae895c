"""Execution contexts: what one finished attempt looked like, normalised for search.

An ``ExecutionContext`` is built from a job and its outcome (by the writer) or
from a ``job_executions`` row (by search and clustering): task, queue, error
type, the message with its variable parts (ids, hex, numbers, paths, hosts)
replaced by placeholders, the traceback's frames without line numbers,
duration, worker, outcome and the payload's keys. Embedding and storing are
left to ``embedders`` and ``store``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Longest message kept (characters): a context is a summary, not a log archive.
MAX_MESSAGE = 2000
# Most traceback frames kept (the innermost ones: where it failed).
MAX_FRAMES = 12

# Order matters: the specific shapes first, so that a UUID is not read as hex
# plus numbers, nor a URL as a host plus a path.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), " <uuid> "),
    (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), " <email> "),
    (re.compile(r"\b([a-z][a-z0-9+.-]*)://[^\s'\"<>]+", re.I), r" \1 <url> "),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b"), " <ip> "),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), " <hex> "),
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", re.I), " <hex> "),
    (re.compile(r"(?:[A-Za-z]:)?(?:[/\\][\w.@%+~-]+){2,}[/\\]?"), " <path> "),
    (re.compile(r"\b(?:[a-z0-9-]+\.)+(?:com|net|org|io|internal|local|lan|cloud|svc|cluster|amazonaws|example)"
                r"(?::\d+)?\b", re.I), " <host> "),
    (re.compile(r"\b[a-z]+[-_]?\d[\w-]*\b", re.I), " <id> "),
    # Codes that name the failure are kept: HTTP and SMTP statuses, errno.
    (re.compile(r"\b([1-5]\d\d)(?= (?:Client|Server) Error|,\s*b['\"])"), r" status_\1 "),
    (re.compile(r"\b(errno|error)\s+(\d{1,4})\b", re.I), r" \1_\2 "),
    (re.compile(r"(?<![\w])[-+]?\d+(?:[.,]\d+)*(?:e[-+]?\d+)?(?:ms|s|kb|mb|gb|%)?", re.I), " <num> "),
)
_SPACES = re.compile(r"\s+")
_SEPARATORS = re.compile(r"[/\\]")
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line \d+, in (?P<fn>\S+)', re.M)


def normalise_message(message: str) -> str:
    """Lowercase ``message`` with ids, UUIDs, hex, numbers, paths, hosts, IPs, URLs and
    e-mail addresses replaced by placeholders (``<id>``, ``<num>``, ...)."""
    text = message[:MAX_MESSAGE]
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return _SPACES.sub(" ", text).strip().lower()


def traceback_frames(traceback: str | None) -> tuple[str, ...]:
    """The frames of a formatted Python traceback as ``module.py:function``, innermost
    last, without line numbers or directories (at most ``MAX_FRAMES``)."""
    if not traceback:
        return ()
    frames = [_SEPARATORS.split(m["file"])[-1] + ":" + m["fn"] for m in _FRAME.finditer(traceback)]
    return tuple(frames[-MAX_FRAMES:])


def payload_summary(payload: Any, *, values: bool) -> tuple[tuple[str, ...], dict[str, Any] | None]:
    """The payload's top-level keys (sorted), and the payload itself only if ``values``."""
    if not isinstance(payload, Mapping):
        return (), None
    keys = tuple(sorted(str(k) for k in payload))
    return keys, (dict(payload) if values else None)


@dataclass(frozen=True)
class ExecutionContext:
    """One finished attempt, as the execution memory keeps it.

    ``finished_at`` is seconds since the epoch; ``outcome`` is the attempt's
    (``failed``, ``timed_out``, ``completed``, ...). ``normalised`` is computed.
    """

    job_id: int
    attempt: int
    queue: str
    task: str
    outcome: str
    finished_at: float
    error_type: str = ""
    message: str = ""
    frames: tuple[str, ...] = ()
    duration_ms: float | None = None
    worker_id: str | None = None
    payload_keys: tuple[str, ...] = ()
    payload: dict[str, Any] | None = None
    normalised: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if len(self.message) > MAX_MESSAGE:
            object.__setattr__(self, "message", self.message[:MAX_MESSAGE])
        if not self.normalised:
            object.__setattr__(self, "normalised", normalise_message(self.message))

    def to_payload(self) -> dict[str, Any]:
        """The context as a Qdrant point payload (JSON values only)."""
        return {
            "job_id": self.job_id, "attempt": self.attempt, "queue": self.queue, "task": self.task,
            "outcome": self.outcome, "finished_at": self.finished_at, "error_type": self.error_type,
            "message": self.message, "normalised": self.normalised, "frames": list(self.frames),
            "duration_ms": self.duration_ms, "worker_id": self.worker_id, "payload_keys": list(self.payload_keys),
            "payload": self.payload,
        }

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> ExecutionContext:
        """Rebuild a context from a stored point payload."""
        return cls(
            job_id=int(data["job_id"]), attempt=int(data["attempt"]), queue=str(data["queue"]), task=str(data["task"]),
            outcome=str(data["outcome"]), finished_at=float(data["finished_at"]),
            error_type=str(data.get("error_type") or ""), message=str(data.get("message") or ""),
            frames=tuple(data.get("frames") or ()), duration_ms=data.get("duration_ms"),
            worker_id=data.get("worker_id"), payload_keys=tuple(data.get("payload_keys") or ()),
            payload=data.get("payload"), normalised=str(data.get("normalised") or ""),
        )


def text_context(text: str) -> ExecutionContext:
    """A context holding only free text (``pgq similar --text``): the text is read as a
    message, and a leading ``SomeError:`` as its error type."""
    # A dotted or bare CamelCase name of two humps or more ("SMTPServerDisconnected",
    # "psycopg.errors.UniqueViolation") before a colon; "Connection refused: x" is a message.
    match = re.match(r"^\s*(?:[a-z_][\w]*\.)*([A-Z][A-Za-z0-9]*[a-z0-9][A-Z]\w*)\s*:\s*(.*)$", text, re.S)
    error_type, message = (match.group(1), match.group(2)) if match else ("", text)
    return ExecutionContext(job_id=0, attempt=0, queue="", task="", outcome="", finished_at=0.0,
                            error_type=error_type, message=message)
