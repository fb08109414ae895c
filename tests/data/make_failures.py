# ruff: noqa: E501 - the messages are data, kept one per line
"""Write ``failures.jsonl``: a labelled set of realistic job failures for the execution memory.

How the set is built (deterministic: ``random.Random(12)``):
- 24 root causes, each a task, an exception type and two or three phrasings of
  its message, written the way the library or service in question words it
  (several causes share words on purpose: four kinds of timeout, three
  database errors, two HTTP 5xx, two "not found");
- 12 failures per cause (288 in all), each filling its phrasing with fresh
  variable parts: ids, UUIDs, hex digests, hosts, IP addresses and ports,
  file paths, e-mail addresses, durations, sizes, counts;
- a traceback per failure through ``pgq/executor.py``, the task's module
  and the failing library, with random line numbers and install paths.
The label is the cause's name; nothing of the label is in the message.
Run ``python tests/data/make_failures.py`` to regenerate the file.
"""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path

R = random.Random(12)
PER_CAUSE = 12


def host() -> str:
    return f"{R.choice(['db', 'mx', 'api', 'cache', 'worker', 'node'])}{R.randint(1, 40)}.{R.choice(['prod', 'eu-west', 'staging', 'dc2'])}.{R.choice(['internal', 'example.com', 'svc.cluster.local'])}"


def ip() -> str:
    return f"10.{R.randint(0, 255)}.{R.randint(0, 255)}.{R.randint(1, 254)}"


def path() -> str:
    return "/" + "/".join(R.choice(["srv", "data", "var", "exports", "tmp", "mnt", "uploads", "reports", "2024", "in"])
                          for _ in range(R.randint(2, 4))) + f"/{R.choice(['batch', 'report', 'invoice', 'img'])}_{R.randint(1, 99999)}.{R.choice(['csv', 'json', 'pdf', 'png'])}"


def email() -> str:
    return f"{R.choice(['alice', 'bob', 'chen', 'dana', 'eve'])}.{R.randint(1, 999)}@{R.choice(['example.org', 'mail.example.com', 'corp.example.net'])}"


def hexs(n: int = 16) -> str:
    return "".join(R.choice("0123456789abcdef") for _ in range(n))


def num(a: int, b: int) -> int:
    return R.randint(a, b)


# cause: (task, error type, library frame, [phrasings])
CAUSES: dict[str, tuple[str, str, str, list]] = {
    "smtp_timeout": ("send_email", "TimeoutError", "smtplib.py:connect", [
        lambda: f"SMTP timeout after {num(5, 60)}s talking to {host()}:{R.choice([25, 587])}",
        lambda: f"timed out connecting to SMTP server {host()} (message {num(1, 10**6)})",
        lambda: f"SMTP timeout after {num(5, 60)}.{num(0, 9)}s sending to {email()}"]),
    "smtp_auth": ("send_email", "SMTPAuthenticationError", "smtplib.py:login", [
        lambda: f"(535, b'5.7.8 Username and Password not accepted. {hexs(12)} - gsmtp')",
        lambda: f"(535, b'5.7.8 Authentication credentials invalid for {email()}')"]),
    "smtp_mailbox_full": ("send_email", "SMTPRecipientsRefused", "smtplib.py:sendmail", [
        lambda: f"{{'{email()}': (552, b'5.2.2 The email account that you tried to reach is over quota')}}",
        lambda: f"{{'{email()}': (452, b'4.2.2 mailbox full, quota exceeded {num(1, 999)}MB')}}"]),
    "db_unique_email": ("create_user", "UniqueViolation", "psycopg/cursor.py:execute", [
        lambda: f'duplicate key value violates unique constraint "users_email_key" DETAIL: Key (email)=({email()}) already exists.',
        lambda: f'duplicate key value violates unique constraint "users_email_key" (user {num(1, 10**7)})']),
    "db_deadlock": ("settle_invoice", "DeadlockDetected", "psycopg/cursor.py:execute", [
        lambda: f"deadlock detected DETAIL: Process {num(1000, 99999)} waits for ShareLock on transaction {num(10**6, 10**8)}; blocked by process {num(1000, 99999)}.",
        lambda: f"deadlock detected while updating invoice {num(1, 10**6)}: Process {num(1000, 99999)} waits for ShareLock on transaction {num(10**6, 10**8)}"]),
    "db_connection_refused": ("sync_inventory", "OperationalError", "psycopg/connection.py:connect", [
        lambda: f'connection to server at "{host()}" ({ip()}), port 5432 failed: Connection refused Is the server running on that host and accepting TCP/IP connections?',
        lambda: f'connection to server at "{ip()}", port {R.choice([5432, 6432])} failed: Connection refused']),
    "db_statement_timeout": ("nightly_report", "QueryCanceled", "psycopg/cursor.py:execute", [
        lambda: "canceling statement due to statement timeout",
        lambda: f"canceling statement due to statement timeout CONTEXT: SQL statement in report {num(1, 500)} after {num(30, 300)}s"]),
    "http_503_payments": ("charge_card", "HTTPError", "requests/models.py:raise_for_status", [
        lambda: f"503 Server Error: Service Unavailable for url: https://{host()}/v{num(1, 3)}/charges/{uuid.UUID(int=R.getrandbits(128))}",
        lambda: f"503 Server Error: Service Unavailable for url: https://payments.example.com/v2/charges?order={num(1, 10**6)}"]),
    "http_502_gateway": ("fetch_rates", "HTTPError", "requests/models.py:raise_for_status", [
        lambda: f"502 Server Error: Bad Gateway for url: https://{host()}/rates/{R.choice(['EUR', 'USD', 'GBP'])}",
        lambda: f"502 Server Error: Bad Gateway for url: https://{host()}:{num(8000, 9000)}/rates?date=2024-{num(1, 12)}-{num(1, 28)}"]),
    "http_read_timeout": ("fetch_rates", "ReadTimeout", "urllib3/connectionpool.py:_make_request", [
        lambda: f"HTTPSConnectionPool(host='{host()}', port=443): Read timed out. (read timeout={num(2, 30)})",
        lambda: f"HTTPSConnectionPool(host='{host()}', port={num(8000, 9000)}): Read timed out. (read timeout={num(2, 30)}.0)"]),
    "http_401_token": ("push_webhook", "HTTPError", "requests/models.py:raise_for_status", [
        lambda: f"401 Client Error: Unauthorized for url: https://{host()}/hooks/{hexs(24)}",
        lambda: f"401 Client Error: Unauthorized for url: https://hooks.example.com/t/{num(1, 10**5)} (token expired)"]),
    "s3_no_such_key": ("resize_image", "NoSuchKey", "botocore/client.py:_make_api_call", [
        lambda: f"An error occurred (NoSuchKey) when calling the GetObject operation: The specified key does not exist. Key: uploads/{uuid.UUID(int=R.getrandbits(128))}.png",
        lambda: f"An error occurred (NoSuchKey) when calling the GetObject operation: The specified key does not exist. (bucket img-{num(1, 9)})"]),
    "s3_access_denied": ("resize_image", "ClientError", "botocore/client.py:_make_api_call", [
        lambda: "An error occurred (AccessDenied) when calling the PutObject operation: Access Denied",
        lambda: f"An error occurred (AccessDenied) when calling the PutObject operation: Access Denied (request {hexs(16).upper()})"]),
    "file_not_found": ("import_csv", "FileNotFoundError", "importer/csv_import.py:open_source", [
        lambda: f"[Errno 2] No such file or directory: '{path()}'",
        lambda: f"[Errno 2] No such file or directory: '{path()}' (import {num(1, 9999)})"]),
    "disk_full": ("export_report", "OSError", "reports/writer.py:write_chunk", [
        lambda: f"[Errno 28] No space left on device: '{path()}'",
        lambda: f"[Errno 28] No space left on device while writing {num(1, 900)} MB to {path()}"]),
    "csv_bad_row": ("import_csv", "ValueError", "importer/csv_import.py:parse_row", [
        lambda: f"could not convert string to float: '{R.choice(['N/A', '12,5', '--', 'abc'])}' (row {num(2, 50000)}, column {R.choice(['price', 'qty', 'amount'])})",
        lambda: f"could not convert string to float: '{hexs(4)}' in {path()} line {num(2, 50000)}"]),
    "json_decode": ("handle_webhook", "JSONDecodeError", "json/decoder.py:raw_decode", [
        lambda: f"Expecting value: line {num(1, 400)} column {num(1, 80)} (char {num(0, 9000)})",
        lambda: f"Expecting ',' delimiter: line {num(1, 400)} column {num(1, 80)} (char {num(0, 9000)})"]),
    "key_error_customer": ("sync_crm", "KeyError", "crm/mapping.py:to_contact", [
        lambda: "'customer_id'",
        lambda: f"'customer_id' missing in record {uuid.UUID(int=R.getrandbits(128))}"]),
    "redis_oom": ("cache_warm", "ResponseError", "redis/connection.py:read_response", [
        lambda: "OOM command not allowed when used memory > 'maxmemory'.",
        lambda: f"OOM command not allowed when used memory > 'maxmemory'. (key session:{hexs(20)})"]),
    "redis_connection": ("cache_warm", "ConnectionError", "redis/connection.py:connect", [
        lambda: f"Error 111 connecting to {host()}:6379. Connection refused.",
        lambda: f"Error 111 connecting to {ip()}:{num(6379, 6390)}. Connection refused."]),
    "memory_error_pdf": ("render_pdf", "MemoryError", "reportlab/platypus/doctemplate.py:build", [
        lambda: "",
        lambda: f"cannot allocate {num(100, 4000)} MB for page {num(1, 900)} of {path()}"]),
    "rate_limited": ("push_webhook", "HTTPError", "requests/models.py:raise_for_status", [
        lambda: f"429 Client Error: Too Many Requests for url: https://{host()}/hooks/{hexs(24)} (retry after {num(1, 120)}s)",
        lambda: f"429 Client Error: Too Many Requests for url: https://api.example.com/v1/messages?batch={num(1, 999)}"]),
    "ssl_cert_expired": ("fetch_rates", "SSLError", "urllib3/connection.py:connect", [
        lambda: f"HTTPSConnectionPool(host='{host()}', port=443): Max retries exceeded with url: /rates (Caused by SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: certificate has expired (_ssl.c:{num(900, 1100)})')))",
        lambda: f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: certificate has expired (_ssl.c:{num(900, 1100)}) for {host()}"]),
    "stripe_card_declined": ("charge_card", "CardError", "stripe/api_requestor.py:handle_error_response", [
        lambda: f"Request req_{hexs(14)}: Your card was declined.",
        lambda: f"Request req_{hexs(14)}: Your card was declined. (decline_code: {R.choice(['generic_decline', 'insufficient_funds', 'do_not_honor'])})"]),
}


def traceback(task: str, error_type: str, library_frame: str, message: str) -> str:
    site = R.choice(["/srv/app/.venv/lib/python3.11/site-packages", "/usr/local/lib/python3.12/site-packages",
                     "/home/deploy/venvs/app-" + hexs(6) + "/lib/python3.11/site-packages"])
    module, fn = library_frame.split(":")
    lines = ["Traceback (most recent call last):",
             f'  File "{site}/pgq/executor.py", line {num(100, 140)}, in run_sync',
             "    return fn(**payload)",
             f'  File "/srv/app/tasks/{task}.py", line {num(10, 300)}, in {task}',
             "    result = do_it(payload)",
             f'  File "{site}/{module}", line {num(20, 3000)}, in {fn}',
             "    raise exc",
             f"{error_type}: {message}"]
    return "\n".join(lines)


def build() -> list[dict[str, str]]:
    """The set's rows, in file order (the same every run)."""
    R.seed(12)
    rows = []
    for cause, (task, error_type, frame, phrasings) in CAUSES.items():
        for i in range(PER_CAUSE):
            message = phrasings[i % len(phrasings)]()
            rows.append({"cause": cause, "task": task, "error_type": error_type, "message": message,
                         "traceback": traceback(task, error_type, frame, message)})
    R.shuffle(rows)
    return rows


def main() -> None:
    out = Path(__file__).with_name("failures.jsonl")
    rows = build()
    out.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    print(f"{len(rows)} failures from {len(CAUSES)} causes -> {out}")


if __name__ == "__main__":
    main()
