"""The README's "Testing your own tasks" example, run as a user runs it.

The section's file blocks (``# pyproject.toml``, ``# myapp/signup.py``,
``# tests/test_signup.py``) are written to a scratch project, and pytest runs
there in a subprocess with the plugin found through its entry point, on this
run's server (``PGQ_TEST_DATABASE_URL``). Every example test must pass, and
the plugin must have cloned a database for each.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
HEADING = "## Testing your own tasks"


def section_files() -> dict[str, str]:
    """``path -> text`` of each code block of the section whose first line names a file."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n{HEADING}\n")
    end = text.index("\n## ", start + 1)
    blocks = re.findall(r"^```\w+\n(# ([\w/.]+\.(?:py|toml))\n.*?)^```", text[start:end], re.S | re.M)
    return {path: block for block, path in blocks}


def test_the_readme_testing_example_passes_as_a_users_test_suite(tmp_path: Path, server_url: str) -> None:
    files = section_files()
    assert sorted(files) == ["myapp/signup.py", "pyproject.toml", "tests/test_signup.py"]
    for name, block in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block, encoding="utf-8")
    (tmp_path / "myapp" / "__init__.py").touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQ_")}
    env["PGQ_TEST_DATABASE_URL"] = server_url
    done = subprocess.run([sys.executable, "-m", "pytest", "-W", "error", "-p", "no:cacheprovider", "tests"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    tests = re.findall(r"^def (test_\w+)\(", files["tests/test_signup.py"], re.M)
    assert len(tests) == 2 and f"{len(tests)} passed" in done.stdout, done.stdout
    assert "test databases cloned from the migrated template" in done.stdout, done.stdout
