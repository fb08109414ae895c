"""``pgq bench [SCENARIO]``: the load-test scenarios of ``bench/``, loaded on first use.

``load_bench`` imports the bench package (shipped in the wheel as
``pgq._bench``); its scenarios, options and reports are its own.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import click

from pgq.cli.common import handle_errors


def load_bench() -> Any:
    """Import the bench/ scenarios (shipped in the wheel as pgq/_bench)."""
    name = "pgq._bench"
    if name in sys.modules:
        return sys.modules[name]
    from pgq.sqlfiles import bench_dir

    path = bench_dir()
    spec = importlib.util.spec_from_file_location(name, path / "__init__.py", submodule_search_locations=[str(path)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class _BenchGroup(click.Group):
    """``pgq bench [SCENARIO]``: the scenarios and their options live in bench/ and load on first use.

    Without a scenario it runs the quick bench, whose options are the group's own.
    """

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return [*load_bench().quick_params(), *super().get_params(ctx)]

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(load_bench().commands(handle_errors))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command: click.Command | None = load_bench().commands(handle_errors).get(cmd_name)
        return command


@click.group(cls=_BenchGroup, invoke_without_command=True)
@click.pass_context
@handle_errors
def bench(ctx: click.Context, /, as_json: bool, plot_path: str | None, **params: Any) -> None:
    """Load-test scenarios: pgq against the raw ceilings of its database (and peers).

    `pgq bench` alone runs the quick bench (enqueue N jobs, process them with W
    worker processes, pickup latency); `pgq bench SCENARIO --help` describes a
    scenario, `pgq bench all` runs every one. Each run uses its own schema
    (pgq_bench, recreated), never your queue's; with no database configured an
    embedded PostgreSQL starts.
    """
    if ctx.invoked_subcommand is None:
        load_bench().execute([("quick", params)], ctx.obj.settings(require_db=False).database_url,
                             as_json=as_json, plot_path=plot_path)
