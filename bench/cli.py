"""The click side of ``pgq bench``: one command per scenario, plus ``all``.

``pgq.cli.bench`` loads these lazily (``load_bench``): ``commands()`` gives the
subcommands, ``quick_params()`` the options of ``pgq bench`` without a
scenario, ``execute()`` runs a plan and prints. Records are printed as each
scenario run ends: a table, or with ``--json`` one JSON object per line.
"""

from __future__ import annotations

import copy
import functools
import json
import math
from collections.abc import Callable
from typing import Any

import click

from . import options, plot, runner
from .common import Run
from .report import render
from .scenarios import SCENARIOS

Wrap = Callable[[Callable[..., Any]], Callable[..., Any]]


def output_params() -> list[click.Parameter]:
    return [
        click.Option(["--json", "as_json"], is_flag=True, help="Print one JSON object per scenario run."),
        click.Option(["--plot", "plot_path"], type=click.Path(dir_okay=False),
                     help="Draw throughput over time and latency distributions to this PNG (pgq[bench])."),
    ]


@functools.cache
def quick_params() -> list[click.Parameter]:
    """Options of ``pgq bench`` without a scenario (the quick bench)."""
    return [*SCENARIOS["quick"].PARAMS, *output_params()]


@functools.cache
def commands(wrap: Wrap) -> dict[str, click.Command]:
    """The scenario subcommands; ``wrap`` turns pgq errors into exit codes."""
    found = {name: _scenario_command(name, wrap) for name in SCENARIOS}
    found["all"] = _all_command(wrap)
    return found


def execute(plan: runner.Plan, database_url: str | None, *, as_json: bool, plot_path: str | None) -> list[Run]:
    """Run ``plan``, printing each run; draw the plot at the end."""
    if plot_path:
        plot.require()

    def emit(run: Run) -> None:
        if as_json:
            click.echo(json.dumps(_finite(run.record), sort_keys=True, default=str, allow_nan=False))
        else:
            click.echo(render(run.record, SCENARIOS[run.record["scenario"]].rows(run.record)) + "\n")

    runs = runner.run(plan, database_url=database_url, progress=not as_json, emit=emit)
    if plot_path:
        plot.draw(runs, plot_path)
        click.echo(f"plot written to {plot_path}", err=True)
    return runs


def _scenario_command(name: str, wrap: Wrap) -> click.Command:
    module = SCENARIOS[name]

    @click.pass_obj
    def callback(obj: Any, /, as_json: bool, plot_path: str | None, **params: Any) -> None:
        execute([(name, params)], obj.settings(require_db=False).database_url, as_json=as_json, plot_path=plot_path)

    doc = (module.__doc__ or name).replace("``", "")
    return click.Command(name, params=[*_fresh(module.PARAMS), *output_params()], callback=wrap(callback),
                         help=_keep_lists(doc), short_help=doc.split(":", 1)[-1].split("\n")[0].strip())


def _keep_lists(doc: str) -> str:
    """Mark paragraphs holding a bulleted list so that click does not rewrap them."""
    paragraphs = doc.strip().split("\n\n")
    return "\n\n".join("\b\n" + p if "\n- " in "\n" + p else p for p in paragraphs)


def _all_command(wrap: Wrap) -> click.Command:
    @click.pass_obj
    def callback(obj: Any, /, as_json: bool, plot_path: str | None, skip: str, jobs: int | None,
                 large: int | None) -> None:
        plan = all_plan(skip=[s.strip() for s in skip.split(",") if s.strip()], jobs=jobs, large=large)
        execute(plan, obj.settings(require_db=False).database_url, as_json=as_json, plot_path=plot_path)

    params = [
        click.Option(["--skip"], default="", help="Scenarios to leave out, comma-separated."),
        click.Option(["--jobs", "-n"], type=click.IntRange(1),
                     help="Jobs for baseline, enqueue, throughput, depth and peers (default: each one's)."),
        click.Option(["--large"], type=click.IntRange(0), help="Rows before the depth scenario's large run."),
        *output_params(),
    ]
    return click.Command("all", params=params, callback=wrap(callback), short_help="Every scenario, in sequence.",
                         help="Every scenario in sequence (baseline first, peers last) with modest settings: "
                              "a few minutes on a 2-core machine.")


def all_plan(*, skip: list[str], jobs: int | None = None, large: int | None = None) -> runner.Plan:
    """(scenario, params) for ``pgq bench all``: each scenario's defaults, its ``ALL`` overrides,
    then the command's own."""
    unknown = set(skip) - set(SCENARIOS)
    if unknown:
        raise click.BadParameter(f"unknown scenario(s): {', '.join(sorted(unknown))}", param_hint="--skip")
    plan: runner.Plan = []
    for name, module in SCENARIOS.items():
        if name in skip:
            continue
        for overrides in module.ALL:
            params = {**options.defaults(module.PARAMS), **overrides}
            if jobs is not None and name in ("baseline", "enqueue", "throughput", "depth", "peers"):
                params["jobs"] = jobs
            if large is not None and name == "depth":
                params["large"] = large
            plan.append((name, params))
    return plan


def _fresh(params: list[click.Parameter]) -> list[click.Parameter]:
    """Copies, so that no Parameter object is shared between two commands."""
    return [copy.copy(p) for p in params]


def _finite(value: Any) -> Any:
    """The record with NaN and infinities as null (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
