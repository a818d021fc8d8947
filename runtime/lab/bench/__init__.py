"""``tdvsm bench``: the performance suite (targets P1-P8 of README "Performance"), one module per figure.

Every figure is measured beside its floor, or a peer, in the same run, on the same backend, and
reported as a ratio, because the machine is shared and noisy (absolute numbers move 20-40% between
runs; ratios much less). Each figure's module says what it measures and its target:
``p1_ask``, ``p2_fleet``, ``p3_batching``, ``p4_memory``, ``p7_virtual``, ``p8_embedding``;
``floors`` holds the raw asks and fleets they are compared with, ``peers`` the other actor
frameworks (``--peers``), ``loops`` the event loop of the asyncio figures (``--loop uvloop``).

``--quick`` is a smoke run: every size shrinks (seconds in all; the tests use it), the ratios
are shown but no verdict is passed (small sizes are not the targets' sizes). ``--check`` exits
with 1 when a target is missed.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from typing import TYPE_CHECKING, Final, TypeAlias

import msgspec

from ..usage import UsageError
from ._figure import BenchReport, Figure, render_table
from .loops import use_loop
from .p1_ask import measure_p1
from .p2_fleet import measure_p2
from .p3_batching import measure_p3
from .p4_memory import measure_p4
from .p7_virtual import measure_p7
from .p8_embedding import measure_p8
from .peers import PEERS, installed

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ("FIGURES", "RUNNERS", "BenchReport", "Figure", "Runner", "run_bench")

#: Measures one figure id; ``quick`` shrinks its sizes.
Runner: TypeAlias = "Callable[[bool], list[Figure]]"

#: Figure id -> the function measuring it.
RUNNERS: Final[dict[str, Runner]] = {
    "P1": measure_p1,
    "P2": measure_p2,
    "P3": measure_p3,
    "P4": measure_p4,
    "P7": measure_p7,
    "P8": measure_p8,
}
FIGURES: Final = tuple(RUNNERS)


def run_bench(
    *,
    quick: bool,
    check: bool,
    only: str | None,
    report: str | None,
    extra: Mapping[str, Runner] | None = None,
    peers: bool = False,
    loop: str = "asyncio",
) -> int:
    """Run the suite (or ``only`` some figures); print the table; return the exit status.

    ``extra`` adds figures measured outside ``lab`` (the control plane's, the cluster's): the
    ``tdvsm`` dispatcher passes them, since ``lab`` may not import those rooms. ``peers``
    measures the installed peers (thespian, pykka, xoscar) beside P1. ``loop`` is the event loop of
    the asyncio figures, runtime and floors alike (``loops``: ``"asyncio"`` or ``"uvloop"``).

    Raises:
        UsageError: an unknown figure in ``only``, ``peers`` without any peer installed, or an
            unknown ``loop`` (or uvloop asked for but not installed).
    """
    use_loop(loop)
    runners = {**RUNNERS, **(extra or {})}
    if peers:
        found = installed()
        if not found:
            msg = f"--peers: none of {', '.join(PEERS)} is installed: pip install -e '.[peers]'"
            raise UsageError(msg)
        missing = [name for name in PEERS if name not in found]
        if missing:
            print(f"--peers: not installed, not measured: {', '.join(missing)}", file=sys.stderr)
        runners["P1"] = functools.partial(measure_p1, peers=found)
    known = sorted(runners, key=lambda f: int(f[1:]))
    wanted = [f.strip().upper() for f in only.split(",")] if only else known
    unknown = [f for f in wanted if f not in runners]
    if unknown:
        msg = f"--only: unknown figure {unknown[0]} (known: {', '.join(known)})"
        raise UsageError(msg)
    figures: list[Figure] = []
    for figure in wanted:
        print(f"measuring {figure} ...", file=sys.stderr, flush=True)
        measured = runners[figure](quick)
        # A smoke run passes no verdict, whatever a figure's module decided.
        if quick:
            measured = [msgspec.structs.replace(f, met=None) for f in measured]
        figures.extend(measured)
    result = BenchReport(
        schema="tdvsm.bench/1",
        quick=quick,
        python=sys.version.split()[0],
        platform=platform.platform(),
        cpus=os.cpu_count() or 1,
        loop=loop,
        figures=figures,
    )
    print(render_table(figures, quick=quick))
    if report:
        with open(report, "wb") as out:
            out.write(msgspec.json.format(msgspec.json.encode(result), indent=1))
    missed = [f for f in figures if f.met is False]
    if check and missed:
        print(f"missed: {', '.join(f'{f.id} ({f.name.strip()})' for f in missed)}", file=sys.stderr)
        return 1
    return 0
