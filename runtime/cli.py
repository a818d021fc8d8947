"""The ``tdvsm`` command: a thin dispatcher over the subcommands each part of runtime/ provides.

``runtime.lab.commands`` gives ``run``, ``bench`` and ``workloads``; ``runtime.sim.commands``
gives ``sim`` and ``runtime.serve.commands`` gives ``serve``. This is the only module that
sees every subpackage. Bad options and bad files end the command with one line on stderr and
exit status 2, never a traceback; ``main`` returns the exit status (the console script exits
with it).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from .lab import commands as lab_commands
from .lab.usage import Parser, UsageError
from .serve import commands as serve_commands
from .sim import commands as sim_commands

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from .lab.bench import Figure, Runner
    from .lab.commands import RayRunner

__all__ = ("main",)


def _bench_extra() -> Mapping[str, Runner]:
    """Bench figures of the rooms ``lab`` may not import (each room adds its own here)."""
    from .serve.bench import measure_p5

    figures: dict[str, Runner] = {"P5": measure_p5}
    try:
        from .cluster.bench import measure_p6
    except ImportError as exc:  # the ``ray`` extra is not installed: P6 says so
        if not _ray_missing(exc):
            raise
        figures["P6"] = _missing_ray(exc)
    else:
        figures["P6"] = measure_p6
    return figures


def _ray_missing(exc: ImportError) -> bool:
    return (exc.name or "").split(".")[0] == "ray"


def _missing_ray(exc: ImportError) -> Runner:
    def missing(quick: bool) -> list[Figure]:
        from .lab.bench import Figure

        del quick
        return [
            Figure(
                id="P6",
                name=f"Ray shards: not measured, the ray extra is missing ({exc.name})",
                value=0.0,
                unit="/s",
                floor=None,
                floor_name="pip install -e '.[ray]'",
                ratio=None,
                target=">=1.7x, = local",
                met=None,
            )
        ]

    return missing


def _ray_runner() -> RayRunner:
    """``tdvsm run --backend ray``'s runner (``runtime.cluster``; needs the ``ray`` extra)."""
    try:
        from .cluster.run import run_on_ray
    except ImportError as exc:
        if not _ray_missing(exc):
            raise
        msg = f"--backend ray needs the ray extra (pip install -e '.[ray]'): {exc}"
        raise UsageError(msg) from None
    return run_on_ray


def _parser() -> tuple[Parser, frozenset[str]]:
    """The ``tdvsm`` parser and the names of its subcommands."""
    parser = Parser(prog="tdvsm", description="Simulate Guest VSM on TDX partitions at scale and measure it.")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    lab_commands.add_commands(sub, bench_extra=_bench_extra, ray_runner=_ray_runner)
    sim_commands.add_commands(sub)
    serve_commands.add_commands(sub)
    sub.metavar = "{" + ",".join(sub.choices) + "}"
    return parser, frozenset(sub.choices)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tdvsm`` command line; return its exit status."""
    parser, commands = _parser()
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(words)
        if args.command is None:
            parser.print_help()
            return 2
        status: int = args.handler(args)
        return status
    except UsageError as exc:
        command = f"tdvsm {words[0]}" if words and words[0] in commands else "tdvsm"
        print(f"{command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tdvsm: interrupted", file=sys.stderr)
        return 130
