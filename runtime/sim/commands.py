"""``tdvsm sim``: one seed (``--seed K``) or a campaign (``--seeds N``) of the deterministic simulation.

``tdvsm sim --seeds N --steps M`` runs seeds ``--first`` .. ``--first + N - 1`` on ``--jobs``
processes and exits 0 when every seed passes; for each failing seed it prints its plan, its
first failures and one line that replays it. The summary says how often each fault type
fired (and in how many of the seeds that turned it on) and how often each sometimes-assertion
was hit; a fault that fired in fewer than 90% of its seeds, or an assertion never hit, is
reported as "not exploring". ``tdvsm sim --seed K --steps M`` runs one seed and prints
``trace <sha256>`` last: the same for the same K and M, every time.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from ..lab.usage import UsageError, non_negative_int, positive_int
from .campaign import CampaignReport, replay_line, run_campaign
from .faults import FAULT_TYPES
from .history import SOMETIMES
from .seed import run_seed

if TYPE_CHECKING:
    import argparse

    from ..lab.usage import Parser
    from .world import SeedResult

__all__ = ("DEFAULT_STEPS", "add_commands", "render_campaign")

#: Trio task steps of a seed's safety phase when --steps is not given.
DEFAULT_STEPS = 10_000
#: A fault type that fires in fewer of the seeds that enable it is "not exploring" (A4).
_FIRE_RATE = 0.9


def add_commands(sub: argparse._SubParsersAction[Parser]) -> None:
    """Register ``sim`` on the ``tdvsm`` subparsers."""
    sim = sub.add_parser(
        "sim",
        help="deterministic simulation with fault injection",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    which = sim.add_mutually_exclusive_group(required=True)
    which.add_argument("--seed", type=non_negative_int, help="run this one seed and print its trace hash")
    which.add_argument("--seeds", type=positive_int, help="run a campaign of this many seeds")
    sim.add_argument("--first", type=non_negative_int, default=0, help="the campaign's first seed (0)")
    sim.add_argument(
        "--steps", type=positive_int, default=DEFAULT_STEPS, help=f"task steps per seed ({DEFAULT_STEPS:,})"
    )
    sim.add_argument("--jobs", type=positive_int, help="worker processes (every CPU)")
    sim.add_argument("--report", metavar="FILE.json", help="write the campaign's (or seed's) results")
    sim.set_defaults(handler=_sim)


def _sim(args: argparse.Namespace) -> int:
    if args.seed is not None:
        return _one(args.seed, args.steps, args.report)
    if args.report:
        _writable(args.report)
    print(f"tdvsm sim: {args.seeds} seeds from {args.first}, {args.steps:,} steps each ({_version()})")
    started = time.perf_counter()
    done = 0

    def progress(result: SeedResult) -> None:
        nonlocal done
        done += 1
        sys.stderr.write("." if result.ok else "F")
        if done % 50 == 0 or done == args.seeds:
            sys.stderr.write(f" {done}/{args.seeds}\n")
        sys.stderr.flush()

    report = run_campaign(
        range(args.first, args.first + args.seeds), args.steps, jobs=args.jobs, progress=progress
    )
    print(render_campaign(report, time.perf_counter() - started))
    if args.report:
        Path(args.report).write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=1))
    return 0 if report.ok else 1


def _one(seed: int, steps: int, report: str | None) -> int:
    if report:
        _writable(report)
    result = run_seed(seed, steps)
    print(f"seed {seed}, {steps:,} steps ({_version()})")
    print(f"plan {result.plan.describe()}")
    faults = " ".join(f"{name}={result.faults[name]}" for name in FAULT_TYPES)
    print(f"faults {faults}; crash points {result.crash_points}")
    hits = " ".join(f"{name}={count}" for name, count in result.sometimes.items() if count)
    print(f"sometimes {hits or '-'}")
    print(
        f"calls {result.calls}, restarts {result.restarts}, failed partitions {result.failed_partitions}, "
        f"{result.registers_checked} registers checked, {result.virtual_seconds} virtual s"
    )
    for failure in result.failures:
        print(f"FAILED: {failure}")
    if report:
        Path(report).write_bytes(msgspec.json.format(msgspec.json.encode(result), indent=1))
    print(f"trace {result.trace}")
    return 0 if result.ok else 1


def render_campaign(report: CampaignReport, seconds: float) -> str:
    """The campaign's summary: faults fired, coverage, failures with their replay lines."""
    lines = [f"{'fault':<12}{'enabled':>9}{'fired':>7}{'rate':>7}{'count':>9}"]
    quiet: list[str] = []
    for name in FAULT_TYPES:
        enabled, fired = report.fault_enabled[name], report.fault_fired[name]
        rate = fired / enabled if enabled else 0.0
        lines.append(f"{name:<12}{enabled:>9}{fired:>7}{rate:>7.0%}{report.fault_count[name]:>9}")
        if enabled and rate < _FIRE_RATE:
            quiet.append(f"fault {name} fired in {rate:.0%} of the seeds that enabled it")
    lines.append("")
    lines.append(f"{'sometimes':<40}{'seeds':>7}{'count':>9}")
    for name in SOMETIMES:
        seeds = report.sometimes_seeds[name]
        lines.append(f"{name:<40}{seeds:>7}{report.sometimes_count[name]:>9}")
        if not seeds:
            quiet.append(f"sometimes {name} was never hit")
    lines.append("")
    lines += [f"not exploring: {why}" for why in quiet]
    lines.append(
        f"{report.seeds} seeds, {len(report.failed)} failed; {report.calls:,} calls, "
        f"{report.restarts:,} restarts, {report.failed_partitions} failed partitions, "
        f"{report.registers_checked:,} register histories checked; "
        f"{report.virtual_seconds:,.1f} virtual s in {seconds:.1f} s"
    )
    for result in report.failed:
        lines.append(f"FAILED seed {result.seed}: {result.failures[0]}")
        lines.append(f"  plan {result.plan.describe()}")
        lines.append(f"  replay: {replay_line(result)}")
    return "\n".join(lines)


def _writable(path: str) -> None:
    if not Path(path).resolve().parent.is_dir():
        msg = f"--report {path}: no such directory"
        raise UsageError(msg)


def _version() -> str:
    """This checkout's git commit, when there is one (failures name the code they ran)."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # git from PATH, output only shown
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "git commit unknown"
    return f"git {sha}"
