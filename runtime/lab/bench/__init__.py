"""``tdvsm bench``: the performance suite of PERFORMANCE.md (P1, P2, P3, P4, P7), one module per figure.

Every figure is measured beside its floor in the same run, on the same backend, and reported
as a ratio, because the machine is shared and noisy (absolute numbers move 20-40% between
runs; ratios much less). Each figure's module says what it measures and its target:
``p1_ask``, ``p2_fleet``, ``p3_batching``, ``p4_memory``, ``p7_virtual``; ``floors`` holds the
raw asks and fleets they are compared with.

``--quick`` shrinks every size (seconds in all; used by the tests: its ratios are not
compared with the targets' sizes). ``--check`` exits with 1 when a target is missed.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import TYPE_CHECKING, Final, TypeAlias

import msgspec

from ..usage import UsageError
from ._figure import BenchReport, Figure, render_table
from .p1_ask import measure_p1
from .p2_fleet import measure_p2
from .p3_batching import measure_p3
from .p4_memory import measure_p4
from .p7_virtual import measure_p7

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
}
FIGURES: Final = tuple(RUNNERS)


def run_bench(
    *,
    quick: bool,
    check: bool,
    only: str | None,
    report: str | None,
    extra: Mapping[str, Runner] | None = None,
) -> int:
    """Run the suite (or ``only`` some figures); print the table; return the exit status.

    ``extra`` adds figures measured outside ``lab`` (the control plane's, the cluster's): the
    ``tdvsm`` dispatcher passes them, since ``lab`` may not import those rooms.
    """
    runners = {**RUNNERS, **(extra or {})}
    known = sorted(runners, key=lambda f: int(f[1:]))
    wanted = [f.strip().upper() for f in only.split(",")] if only else known
    unknown = [f for f in wanted if f not in runners]
    if unknown:
        msg = f"--only: unknown figure {unknown[0]} (known: {', '.join(known)})"
        raise UsageError(msg)
    figures: list[Figure] = []
    for figure in wanted:
        print(f"measuring {figure} ...", file=sys.stderr, flush=True)
        figures.extend(runners[figure](quick))
    result = BenchReport(
        schema="tdvsm.bench/1",
        quick=quick,
        python=sys.version.split()[0],
        platform=platform.platform(),
        cpus=os.cpu_count() or 1,
        figures=figures,
    )
    print(render_table(figures))
    if report:
        with open(report, "wb") as out:
            out.write(msgspec.json.format(msgspec.json.encode(result), indent=1))
    missed = [f for f in figures if f.met is False]
    if check and missed:
        print(f"missed: {', '.join(f'{f.id} ({f.name})' for f in missed)}", file=sys.stderr)
        return 1
    return 0
