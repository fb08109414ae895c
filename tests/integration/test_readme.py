"""The README is code: its examples run as written, its calls name real
parameters, and its configuration table lists exactly the settings.

- The Python examples run against a real database (a clone from the fixtures)
  in the order they appear: a block whose first line is ``# path/to/file.py``
  is written to that file in a scratch directory (the app module), every other
  block runs in one namespace with that directory on ``sys.path``, while the
  README's own ``pgq migrate`` and ``pgq worker …`` lines run as commands
  against the same database (the worker in the background, stopped with
  SIGTERM at the end, which must exit 0).
- Every keyword argument in a README call of pgq's API (code spans and code
  blocks) must be a parameter of that call.
- Every ``Settings`` field has a row ``PGQ_<FIELD>`` in the configuration table
  with its default, every row names a field, and every ``PGQ_*`` variable the
  README mentions exists (a setting, or a ``pgq`` option's variable such as
  ``PGQ_DASHBOARD_TOKEN``).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pgq
from pgq.queue import _JOB_OPTIONS, Queue, Task
from pgq.settings import Settings
from pgq.testing import QueueClock, assert_enqueued, enqueued, run_until_empty, use_database

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
TEST_VARIABLES = {"PGQ_TEST_DATABASE_URL", "PGQ_TEST_REDIS_URL", "PGQ_TEST_DASHBOARD_SCREENSHOTS"}


def readme() -> str:
    return README.read_text()


def code_blocks(text: str, language: str) -> list[str]:
    return [m.group(1) for m in re.finditer(rf"^```{language}\n(.*?)^```", text, re.S | re.M)]


def section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


# ---------------------------------------------------------------- examples run as written


def readme_commands(name: str) -> list[str]:
    """The README's shell lines starting with ``pgq <name>`` (comments cut)."""
    found = []
    for block in code_blocks(readme(), "bash"):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith(f"pgq {name}"):
                found.append(line)
    return found


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Iterator[Path]:
    for name in [n for n in os.environ if n.startswith("PGQ_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PGQ_DATABASE_URL", db_url)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.split(".")[0] == "myapp" or name.startswith("myapp"):
            del sys.modules[name]


def _pgq_command() -> list[str]:
    # The command a user types is `pgq`; run the one of this interpreter's environment.
    return [sys.executable, "-m", "pgq"]


def test_the_readme_python_examples_run_as_written(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = code_blocks(readme(), "python")
    files = [b for b in blocks if re.match(r"# [\w/]+\.py\n", b)]
    scripts = [b for b in blocks if b not in files]
    assert files and scripts, "the README lost its Python examples"
    for block in files:
        path = scratch / block.splitlines()[0][2:].strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block)
        for parent in path.relative_to(scratch).parents:
            if str(parent) != ".":
                (scratch / parent / "__init__.py").touch()

    (migrate,) = readme_commands("migrate")
    done = subprocess.run(_pgq_command() + shlex.split(migrate)[1:], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (worker_line,) = readme_commands("worker myapp")
    worker = subprocess.Popen(_pgq_command() + shlex.split(worker_line)[1:], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        namespace: dict[str, Any] = {"__name__": "readme_example"}
        for block in scripts:
            exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - the README's own code
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, output
    printed = capsys.readouterr().out.splitlines()
    # Each example says what it prints in a "# -> value" comment.
    promised = [m.group(1).strip() for b in scripts for m in re.finditer(r"print\(.*\)\s+# -> (.*)$", b, re.M)]
    assert printed == promised
    namespace["q"].close()
    namespace["engine"].dispose()  # the SQLAlchemy example's connection pool


# ---------------------------------------------------------------- parameter names


def _params(fn: Callable[..., Any]) -> tuple[set[str], bool]:
    sig = inspect.signature(fn)
    names = {p.name for p in sig.parameters.values() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return names, any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


SETTINGS_FIELDS = {f.name for f in dataclasses.fields(Settings)}
WORKER_ARGS = _params(pgq.Worker.__init__)[0] - {"self", "queue"}

# What a README call may pass, by the name it calls (any receiver: q., task., worker., pgq.).
API: dict[str, set[str] | None] = {
    "connect": (_params(pgq.connect)[0] | SETTINGS_FIELDS),
    "task": _params(Queue.task)[0],
    "enqueue": _params(Queue.enqueue)[0] | _JOB_OPTIONS,
    "enqueue_many": _params(Queue.enqueue_many)[0],
    "spec": _JOB_OPTIONS | {"payload"},
    "job_spec": _params(Queue.job_spec)[0],
    "defer": None,  # **payload: the handler's own arguments
    "get": _params(Queue.get)[0],
    "cancel": _params(Queue.cancel)[0],
    "wait": _params(Queue.wait)[0],
    "dead_letters": _params(Queue.dead_letters)[0],
    "requeue_dead": _params(Queue.requeue_dead)[0],
    "purge_dead": _params(Queue.purge_dead)[0],
    "similar": _params(Queue.similar)[0],
    "worker": _params(Queue.worker)[0] | WORKER_ARGS,
    "run": _params(pgq.Worker.run)[0],
    "run_once": _params(pgq.Worker.run_once)[0],
    "stop": _params(pgq.Worker.stop)[0],
    "enqueue_async": _params(Queue.enqueue_async)[0] | _JOB_OPTIONS,
    "enqueue_many_async": _params(Queue.enqueue_many_async)[0],
    "get_async": _params(Queue.get_async)[0],
    "cancel_async": _params(Queue.cancel_async)[0],
    "wait_async": _params(Queue.wait_async)[0],
    "dead_letters_async": _params(Queue.dead_letters_async)[0],
    "requeue_dead_async": _params(Queue.requeue_dead_async)[0],
    "purge_dead_async": _params(Queue.purge_dead_async)[0],
    "defer_async": None,  # **payload, as defer
    "Backoff": {f.name for f in dataclasses.fields(pgq.Backoff)} if dataclasses.is_dataclass(pgq.Backoff)
    else _params(pgq.Backoff.__init__)[0],
    "Retry": _params(pgq.Retry.__init__)[0],
    "Fatal": None,  # **details
    "Settings": SETTINGS_FIELDS,
    "from_env": _params(Settings.from_env)[0] | SETTINGS_FIELDS,
    # pgq.testing ("Testing your own tasks"); enqueued's queue= filter arrives in **job_queue.
    "run_until_empty": _params(run_until_empty)[0],
    "enqueued": _params(enqueued)[0] | {"queue"},
    "assert_enqueued": _params(assert_enqueued)[0] | {"queue"},
    "advance": _params(QueueClock.advance)[0],
    "advance_to_next_tick": _params(QueueClock.advance_to_next_tick)[0],
    "use_database": _params(use_database)[0],
}
assert _params(Task.enqueue)[1] and _params(Task.spec)[1]  # both take the job options as **options


def _calls(text: str) -> Iterator[tuple[str, str]]:
    """``(name, argument text)`` of each call of a name in ``API`` found in code."""
    code = "\n".join(code_blocks(text, "python")) + "\n" + "\n".join(re.findall(r"`([^`\n]+)`", text))
    for match in re.finditer(r"(?<![\w])(?:[A-Za-z_][\w]*\.)*(?P<name>[A-Za-z_]\w*)\(", code):
        name = match.group("name")
        if name not in API:
            continue
        depth, end = 1, match.end()
        while end < len(code) and depth:
            depth += {"(": 1, ")": -1}.get(code[end], 0)
            end += 1
        args = code[match.end():end - 1]
        while re.search(r"\([^()]*\)", args):  # nested calls are checked on their own
            args = re.sub(r"\([^()]*\)", "", args)
        yield name, args


def test_every_keyword_in_a_readme_call_is_a_parameter_of_that_call() -> None:
    wrong = []
    checked = 0
    for name, args in _calls(readme()):
        allowed = API[name]
        for keyword in re.findall(r"(?<![=!<>\w.])([A-Za-z_]\w*)\s*=(?![=>])", args):
            checked += 1
            if allowed is not None and keyword not in allowed:
                wrong.append(f"{name}({keyword}=)")
    assert checked > 40, "the README's calls were not found (the extraction broke)"
    assert wrong == []


def test_the_parameter_check_would_catch_a_wrong_name() -> None:
    found = [(name, kw) for name, args in _calls("Call `pgq.connect(url=None)` or `q.worker(batch=3)`.")
             for kw in re.findall(r"([A-Za-z_]\w*)\s*=(?![=>])", args)]
    assert found == [("connect", "url"), ("worker", "batch")]
    assert "url" not in API["connect"] and "batch" not in API["worker"]  # type: ignore[operator]


# ---------------------------------------------------------------- the configuration table


def configuration_table() -> dict[str, str]:
    """``PGQ_NAME -> default cell`` from the README's configuration table."""
    rows: dict[str, str] = {}
    for line in section(readme(), "Configuration").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`PGQ_"):
            continue
        names = re.findall(r"`(PGQ_\w+)`", cells[0])
        defaults = [d.strip() for d in cells[1].split(" / ")]
        if len(defaults) != len(names):
            defaults = [cells[1]] * len(names)
        rows.update(zip(names, defaults, strict=True))
    return rows


def _same_default(cell: str, value: Any) -> bool:
    if value is None:
        return cell in ("—", "-", "")
    if isinstance(value, bool):
        return cell == ("true" if value else "false")
    if isinstance(value, str):
        return cell == f"`{value}`"
    try:
        return math.isclose(float(cell.replace(",", "")), float(value))
    except ValueError:
        return False


def test_every_setting_is_in_the_configuration_table_with_its_default() -> None:
    table = configuration_table()
    variables = {f"PGQ_{f.name.upper()}": f for f in dataclasses.fields(Settings)}
    assert sorted(set(variables) - set(table)) == [], "settings missing from the README's table"
    assert sorted(set(table) - set(variables)) == [], "rows naming no setting"
    wrong = {name: (table[name], variables[name].default) for name in variables
             if not _same_default(table[name], variables[name].default)}
    assert wrong == {}


def cli_variables() -> set[str]:
    """The ``PGQ_*`` variables that options of the ``pgq`` command read (``envvar=``), e.g. PGQ_DASHBOARD_TOKEN."""
    import click

    from pgq.cli import main

    found: set[str] = set()
    commands: list[click.Command] = [main]
    while commands:
        command = commands.pop()
        if isinstance(command, click.Group):
            commands.extend(command.commands.values())
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            found.update([envvar] if isinstance(envvar, str) else envvar or [])
    return found


def test_every_pgq_variable_the_readme_mentions_exists() -> None:
    variables = {f"PGQ_{f.name.upper()}" for f in dataclasses.fields(Settings)} | TEST_VARIABLES | cli_variables()
    mentioned = set(re.findall(r"\bPGQ_[A-Z0-9_]*[A-Z0-9]\b", readme()))
    assert sorted(mentioned - variables) == []
