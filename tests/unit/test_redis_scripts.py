"""The Redis accelerator's Lua scripts are files under ``pgq/redis/scripts/``, read like ``db/`` SQL."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from pgq.redis import client
from pgq.redis.keys import POPPED_AT_KEEP_MS

REPO = Path(__file__).resolve().parents[2]


def test_every_script_file_has_a_header_and_is_loaded_by_the_client() -> None:
    files = sorted(p.stem for p in client.SCRIPTS.glob("*.lua"))
    assert files == ["commit", "finish_build", "finish_queue", "give_back", "lease", "offer", "pop", "retire"]
    loaded = set(re.findall(r'read_script\("(\w+)"', Path(client.__file__).read_text(encoding="utf-8")))
    assert loaded == set(files)
    for name in files:
        text = (client.SCRIPTS / f"{name}.lua").read_text(encoding="utf-8")
        assert text.startswith(f"-- {name}.lua: "), name
        assert "KEYS" in text.splitlines()[1] or "KEYS" in text.splitlines()[2], name


def test_a_placeholder_takes_the_python_constant() -> None:
    text = client.read_script("pop", POPPED_AT_KEEP_MS=POPPED_AT_KEEP_MS)
    assert f"local POPPED_AT_KEEP_MS = {POPPED_AT_KEEP_MS}\n" in text


def test_a_placeholder_left_without_a_value_is_an_error() -> None:
    with pytest.raises(ValueError, match="pop.lua has a placeholder without a value"):
        client.read_script("pop")


def test_the_wheel_ships_the_whole_package_directory() -> None:
    # hatchling ships every file under a listed package (the .lua files included)
    # unless the wheel target excludes or filters it: keep it that way.
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    wheel = config["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["packages"] == ["pgq"]
    assert not {"exclude", "only-include", "artifacts"} & set(wheel)
