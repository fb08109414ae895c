"""Execution contexts and the lexical embedder: normalisation, frames, vectors (no network)."""

from __future__ import annotations

import numpy as np
import pytest

from pgq.errors import ConfigurationError
from pgq.memory.context import ExecutionContext, normalise_message, payload_summary, text_context, traceback_frames
from pgq.memory.embedders import DIMENSION, LexicalEmbedder, make_embedder
from pgq.settings import Settings

TRACEBACK = '''Traceback (most recent call last):
  File "/srv/app/.venv/lib/python3.11/site-packages/pgq/executor.py", line 120, in run_sync
    return fn(**payload)
  File "/srv/app/tasks/mail.py", line 42, in send_email
    smtp.send(message)
  File "/usr/lib/python3.11/smtplib.py", line 341, in connect
    self.sock = self._get_socket(host, port, self.timeout)
TimeoutError: timed out
'''


def ctx(message: str, error_type: str = "TimeoutError", frames: tuple[str, ...] = ()) -> ExecutionContext:
    return ExecutionContext(job_id=1, attempt=1, queue="default", task="send_email", outcome="failed",
                            finished_at=0.0, error_type=error_type, message=message, frames=frames)


@pytest.mark.parametrize(("message", "expected"), [
    ("user 12345 not found", "user <num> not found"),
    ("order 8f14e45f-ceea-467f-a0e4-5a1b2c3d4e5f missing", "order <uuid> missing"),
    ("connect to db-7.prod.internal:5432 failed", "connect to <host> failed"),
    ("connect to 10.0.3.17:6379 refused", "connect to <ip> refused"),
    ("cannot open /var/data/exports/2024/report_17.csv", "cannot open <path>"),
    ("GET https://api.example.com/v1/users/17 returned 503", "get https <url> returned <num>"),
    ("bounce from alice.smith@example.org", "bounce from <email>"),
    ("checksum deadbeefcafe0123 != 0x1f", "checksum <hex> != <hex>"),
    ("worker-17 lost lease shard_3", "<id> lost lease <id>"),
])
def test_normalise_message_replaces_variable_parts(message: str, expected: str) -> None:
    assert normalise_message(message) == expected


def test_two_instances_of_one_failure_normalise_alike() -> None:
    a = normalise_message("SMTP timeout after 30s talking to mx3.mail.example.com (message 99812)")
    b = normalise_message("SMTP timeout after 12.5s talking to mx11.mail.example.com (message 7)")
    assert a == b


def test_traceback_frames_drop_directories_and_line_numbers() -> None:
    assert traceback_frames(TRACEBACK) == ("executor.py:run_sync", "mail.py:send_email", "smtplib.py:connect")
    assert traceback_frames(None) == ()


def test_payload_summary_keeps_keys_only_unless_asked() -> None:
    assert payload_summary({"to": "a@b.c", "id": 3}, values=False) == (("id", "to"), None)
    assert payload_summary({"to": "a@b.c"}, values=True) == (("to",), {"to": "a@b.c"})
    assert payload_summary([1, 2], values=True) == ((), None)


def test_context_round_trips_through_a_point_payload() -> None:
    c = ExecutionContext(job_id=7, attempt=2, queue="mail", task="send", outcome="timed_out", finished_at=12.5,
                         error_type="TimeoutError", message="slow 12", frames=("a.py:f",), duration_ms=3.0,
                         worker_id="w", payload_keys=("to",))
    back = ExecutionContext.from_payload(c.to_payload())
    assert back == c and back.normalised == "slow <num>"


def test_text_context_reads_a_leading_error_type() -> None:
    c = text_context("smtplib.SMTPServerDisconnected: Connection unexpectedly closed")
    assert (c.error_type, c.message) == ("SMTPServerDisconnected", "Connection unexpectedly closed")
    assert text_context("disk full").error_type == ""


def test_lexical_vectors_are_unit_length_deterministic_and_384_wide() -> None:
    contexts = [ctx("SMTP timeout after 30s"), ctx("")]
    a = LexicalEmbedder().embed(contexts)
    b = LexicalEmbedder().embed(contexts)
    assert a.shape == (2, DIMENSION) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert abs(float(np.linalg.norm(a[0])) - 1.0) < 1e-5


def test_lexical_embedder_puts_the_same_failure_closer_than_another() -> None:
    same_a, same_b, other = LexicalEmbedder().embed([
        ctx("SMTP timeout after 30s talking to mx3.example.com"),
        ctx("SMTP timeout after 4s talking to mx9.example.com"),
        ctx("duplicate key value violates unique constraint users_email_key", "UniqueViolation"),
    ])
    assert float(same_a @ same_b) > 0.99
    assert float(same_a @ other) < 0.3


def test_unknown_embedder_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="PGQ_MEMORY_EMBEDDER"):
        make_embedder("word2vec")


@pytest.mark.parametrize(("name", "value"), [
    ("memory_retention_seconds", 3600.0), ("memory_retention_seconds", 91 * 24 * 3600.0),
    ("memory_success_sample", 1.5), ("memory_batch_size", 0), ("memory_collection", "a b"),
    ("memory_embedder", "bert"), ("memory_writer", "fork"), ("memory_writer", None), ("memory_path", " "), ("memory_flush_interval_seconds", 0),
])
def test_bad_memory_settings_name_the_variable(name: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match="PGQ_" + name.upper()):
        Settings(**{name: value})


def test_memory_is_off_unless_asked() -> None:
    assert not Settings().memory_enabled
    assert Settings(memory=True).memory_enabled
    assert Settings(qdrant_url="http://127.0.0.1:6333").memory_enabled
    assert Settings(memory_path="/tmp/m").memory_location() == "/tmp/m"


def test_a_repeated_failure_reuses_its_vector_and_gets_the_same_one() -> None:
    """The lexical embedder keeps the vectors of recent inputs: a repeat (in the same batch or a
    later one) gets exactly what a fresh embedder computes, and the kept rows stay bounded."""
    import pgq.memory.embedders as embedders

    def failure(i: int, error: str = "ConnectionResetError") -> ExecutionContext:
        return ExecutionContext(job_id=i, attempt=1, queue="q", task="t", outcome="failed", finished_at=1.0,
                                error_type=error, message=f"peer 10.0.{i % 250}.{i % 7} reset (request {i})",
                                frames=("net.py:send", "mail.py:deliver"))

    batch = [failure(1), failure(2), failure(3, "TimeoutError"), failure(4)]
    kept = LexicalEmbedder()
    first = kept.embed(batch)
    again = kept.embed([failure(9), failure(10, "TimeoutError")])
    assert len(kept._rows) == 2  # two distinct inputs: the message's ids and numbers normalise away
    fresh = [LexicalEmbedder().embed([c])[0] for c in batch]
    assert np.array_equal(first, np.stack(fresh))
    assert np.array_equal(again, np.stack([fresh[0], fresh[2]]))
    assert not np.array_equal(first[0], first[2])
    # Bounded: past ROWS_KEPT distinct inputs, what was kept is dropped and begins again.
    small = LexicalEmbedder()
    limit = embedders.ROWS_KEPT
    distinct = [ExecutionContext(job_id=i, attempt=1, queue="q", task="t", outcome="failed", finished_at=1.0,
                                 error_type=f"Error{chr(65 + i % 26)}{chr(65 + i // 26 % 26)}{chr(65 + i // 676 % 26)}")
                for i in range(limit + 10)]
    for start in range(0, len(distinct), 256):
        small.embed(distinct[start:start + 256])
    assert 0 < len(small._rows) <= limit
