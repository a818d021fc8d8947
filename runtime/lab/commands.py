"""The experiment subcommands of ``tdvsm``: ``run``, ``compare``, ``bench`` and ``workloads``.

``add_commands`` registers their parsers on the dispatcher's subparsers; each parsed command
carries its handler, which returns the exit status. Bad options raise ``UsageError``.
``run --backend ray`` runs through ``ray_runner``, which the dispatcher supplies from
``runtime.cluster`` (``lab`` may not import it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio
import msgspec

from .capacity import check_fleet
from .costs import CostModel, CostModelError, load_cost_model
from .experiment import run_experiment
from .outputs import JSON, PLOT_FORMATS, check_directory, check_file
from .records import ExperimentOptions, Progress, RunData
from .report import DEFAULT_COST_SOURCE
from .thresholds import THRESHOLD_FAILED, Threshold, ThresholdError, check_thresholds, parse_threshold
from .usage import UsageError, non_negative_int, positive_float, positive_int
from .workloads import MixError, describe, resolve

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from .bench import Runner
    from .cells import ClusterReport
    from .report import Report
    from .usage import Parser

__all__ = ("RayRunner", "add_commands")

#: Runs ``tdvsm run --backend ray``: (options, costs, progress per run, address=, shards=) ->
#: (the runs, where they ran).
RayRunner: TypeAlias = "Callable[..., tuple[list[RunData], ClusterReport]]"

#: Defaults of ``tdvsm run``: ~300 x 4 VPs boot in a fraction of a second, then 10 s of load.
DEFAULT_PARTITIONS = 300
DEFAULT_VPS = 4
DEFAULT_DRIVERS = 100
DEFAULT_DURATION = 10.0
DEFAULT_VIRTUAL_OPS = 20_000


def add_commands(
    sub: argparse._SubParsersAction[Parser],
    *,
    bench_extra: Callable[[], Mapping[str, Runner]] | None = None,
    ray_runner: Callable[[], RayRunner] | None = None,
) -> None:
    """Register ``run``, ``compare``, ``bench`` and ``workloads`` on the ``tdvsm`` subparsers.

    ``bench_extra`` gives the bench figures measured outside ``lab`` and ``ray_runner`` the
    runner of ``--backend ray`` (each loaded only when used).
    """
    run = sub.add_parser("run", help="run an experiment and report it", description=_RUN_HELP)
    size = run.add_argument_group("size")
    size.add_argument("--partitions", type=positive_int, default=DEFAULT_PARTITIONS, help="partitions (300)")
    size.add_argument("--vps", type=positive_int, default=DEFAULT_VPS, help="VPs per partition (4)")
    size.add_argument(
        "--force", action="store_true", help="run a fleet even when it is estimated not to fit in memory"
    )
    load = run.add_argument_group("load")
    load.add_argument("--workload", default="mixed", help="a workload name or a TOML/JSON mix file (mixed)")
    stop = load.add_mutually_exclusive_group()
    stop.add_argument(
        "--duration", type=positive_float, help="seconds of operations (real: 10; virtual: virtual s)"
    )
    stop.add_argument(
        "--ops", type=positive_int, help=f"operations to run (virtual clock: {DEFAULT_VIRTUAL_OPS:,})"
    )
    load.add_argument(
        "--drivers",
        type=positive_int,
        help=f"concurrent drivers ({DEFAULT_DRIVERS}, or one per VP when there are fewer VPs)",
    )
    load.add_argument("--rate", type=positive_float, help="open loop: operations per second over all drivers")
    how = run.add_argument_group("how")
    how.add_argument(
        "--backend",
        choices=("asyncio", "trio", "ray"),
        default="asyncio",
        help="event loop, or ray: the fleet's cells sharded over Ray actors (asyncio)",
    )
    how.add_argument(
        "--address", metavar="ADDR", help="ray: the cluster's HOST:PORT (default: start a local Ray)"
    )
    how.add_argument("--shards", type=positive_int, help="ray: shard actors (default: one per CPU)")
    how.add_argument("--clock", choices=("real", "virtual"), default="real")
    how.add_argument("--commit-policy", choices=("batched", "eager"), default=None, help="(batched)")
    how.add_argument("--compare-policies", action="store_true", help="run batched and eager, side by side")
    how.add_argument("--seed", type=int, default=1, help="seed of every random choice (1)")
    how.add_argument("--costs", metavar="FILE", help="cost model overrides (TOML or JSON)")
    out = run.add_argument_group("output")
    out.add_argument("--report", metavar="FILE.json", help="write the JSON report")
    out.add_argument("--plot", metavar="FILE.png", help="write latency and throughput plots (.png/.svg/.pdf)")
    out.add_argument("--hgrm", metavar="DIR", help="write one HdrHistogram .hgrm file per action type")
    out.add_argument(
        "--trace", metavar="FILE.json", help="write a Perfetto/Chrome trace of sampled VPs (first run)"
    )
    out.add_argument("--trace-vps", type=non_negative_int, default=8, help="VPs sampled for --trace (8)")
    out.add_argument("--include-wall", action="store_true", help="virtual clock: add wall-clock facts")
    out.add_argument(
        "--threshold",
        metavar="EXPR",
        action="append",
        default=[],
        help="a pass/fail check such as 'SetVpRegisters.p99<5us' (repeatable; exit 99 if one fails)",
    )
    out.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="(on a terminal)"
    )
    run.set_defaults(handler=_run, ray_runner=ray_runner)
    compare = sub.add_parser("compare", help="two run reports side by side", description=_COMPARE_HELP)
    compare.add_argument("a", metavar="A.json", help="the baseline report (tdvsm run --report)")
    compare.add_argument("b", metavar="B.json", help="the report compared with it")
    compare.add_argument("--plot", metavar="FILE.png", help="overlay the latency CDFs of A and B")
    compare.set_defaults(handler=_compare)
    bench = sub.add_parser("bench", help="the performance suite (targets P1-P8, README 'Performance')")
    bench.add_argument("--quick", action="store_true", help="smoke run: small sizes, no verdict")
    bench.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    bench.add_argument(
        "--peers", action="store_true", help="measure thespian, pykka and xoscar beside P1 (extra 'peers')"
    )
    bench.add_argument("--only", metavar="P1,P2,...", help="run only these figures")
    bench.add_argument("--report", metavar="FILE.json", help="write the results as JSON")
    bench.add_argument(
        "--loop",
        default="asyncio",
        metavar="LOOP",
        help="asyncio figures (runtime and floors) on asyncio's loop or on uvloop (extra 'uvloop')",
    )
    bench.set_defaults(handler=_bench, bench_extra=bench_extra)
    sub.add_parser("workloads", help="list the workloads").set_defaults(handler=_workloads)


_COMPARE_HELP = (
    "Print two tdvsm run reports side by side, per phase, action type and operation: p50, p99, "
    "p99.9, throughput, TDCALLs and commits, each with the ratio B/A."
)

_RUN_HELP = (
    "Create partitions, bring up Guest VSM on each (DOMAIN S1/S2), then run a workload with "
    "closed-loop drivers (or open loop with --rate), and report per action type throughput and "
    "latency percentiles. With no options: 300 partitions x 4 VPs, mixed workload, 10 s."
)


def _options(args: argparse.Namespace, policy: str) -> ExperimentOptions:
    mix = resolve(args.workload)
    total_vps = args.partitions * args.vps
    if args.vps > 1024:
        msg = f"--vps {args.vps}: a partition has at most 1024 VPs"
        raise UsageError(msg)
    drivers = min(DEFAULT_DRIVERS, total_vps) if args.drivers is None else args.drivers
    if mix.weights and drivers > total_vps:
        msg = f"--drivers {drivers} exceeds the {total_vps} VPs: each driver needs a VP of its own"
        raise UsageError(msg)
    if not mix.weights and (args.duration is not None or args.ops is not None):
        msg = "--duration and --ops do not apply to --workload boot (it boots every partition once)"
        raise UsageError(msg)
    duration, ops = args.duration, args.ops
    if mix.weights and duration is None and ops is None:
        if args.clock == "virtual":
            ops = DEFAULT_VIRTUAL_OPS
        else:
            duration = DEFAULT_DURATION
    return ExperimentOptions(
        partitions=args.partitions,
        vps=args.vps,
        workload=args.workload if mix.source == "built-in" else Path(args.workload).name,
        mix=mix,
        duration=duration,
        ops=ops,
        drivers=drivers,
        rate=args.rate,
        backend=args.backend,
        clock=args.clock,
        commit_policy=policy,  # type: ignore[arg-type]  # argparse choices checked it
        seed=args.seed,
        trace_vps=args.trace_vps if args.trace else 0,
    )


class _Bar(Progress):
    """A tqdm progress bar per phase, on stderr."""

    def __init__(self, enabled: bool | None, label: str) -> None:
        self._enabled = enabled
        self._label = label
        self._bar: Any = None

    def start(self, phase: str, total: float, unit: str) -> None:
        from tqdm import tqdm  # only the CLI draws bars

        disable = None if self._enabled is None else not self._enabled
        fmt = "{l_bar}{bar}| {n:.3g}/{total:.3g} s [{elapsed}<{remaining}]" if unit == "s" else None
        self._bar = tqdm(
            total=total,
            desc=f"{self._label}{phase}",
            unit=f" {unit}",
            file=sys.stderr,
            disable=disable,
            leave=False,
            dynamic_ncols=True,
            bar_format=fmt,
        )

    def update(self, done: float) -> None:
        bar = self._bar
        if bar is not None:
            bar.n = min(done, bar.total) if bar.total else done
            bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _run(args: argparse.Namespace) -> int:
    from .report import build_report, encode_report
    from .tables import render_table  # keep ``tdvsm --help`` fast

    if args.compare_policies and args.commit_policy is not None:
        msg = "--compare-policies runs both commit policies: drop --commit-policy"
        raise UsageError(msg)
    report_path = check_file(args.report, "--report", JSON)
    plot_path = check_file(args.plot, "--plot", PLOT_FORMATS)
    trace_path = check_file(args.trace, "--trace", JSON)
    hgrm_dir = check_directory(args.hgrm, "--hgrm")
    thresholds = _thresholds(args.threshold)
    costs, overridden, source = CostModel(), frozenset[str](), DEFAULT_COST_SOURCE
    if args.costs is not None:
        try:
            costs, overridden = load_cost_model(args.costs)
        except CostModelError as exc:
            raise UsageError(str(exc)) from None
        source = f"{DEFAULT_COST_SOURCE}, overridden by {Path(args.costs).name}"
    try:
        policies = ["batched", "eager"] if args.compare_policies else [args.commit_policy or "batched"]
        options = [_options(args, policy) for policy in policies]
    except MixError as exc:
        raise UsageError(str(exc)) from None
    if args.backend != "ray" and (args.address is not None or args.shards is not None):
        msg = "--address and --shards need --backend ray"
        raise UsageError(msg)
    if args.backend != "ray" or args.address is None:  # a remote cluster's memory is not ours
        estimate = check_fleet(args.partitions, args.vps, force=args.force)
        if estimate is not None:
            print(f"tdvsm run: fleet: {estimate.describe()}", file=sys.stderr)

    def bar(opts: ExperimentOptions) -> Progress:
        return _Bar(args.progress, f"{opts.commit_policy} " if args.compare_policies else "")

    runs: list[RunData] = []
    cluster: ClusterReport | None = None
    if args.backend == "ray":
        runs, cluster = _ray(args)(options, costs, bar, address=args.address, shards=args.shards)
    else:
        for opts in options:
            runs.append(anyio.run(run_experiment, opts, costs, bar(opts), backend=opts.backend))
    report = build_report(
        runs,
        costs,
        cost_source=source,
        overridden=overridden,
        include_wall=True if args.include_wall else None,
        cluster=cluster,
    )
    if thresholds:
        report = msgspec.structs.replace(report, thresholds=check_thresholds(report, thresholds))
    print(render_table(report))
    if cluster is not None:
        _print_shards(report)
    for warning in report.warnings:
        print(f"tdvsm run: warning: {warning}", file=sys.stderr)
    if report_path is not None:
        report_path.write_bytes(encode_report(report))
        print(f"report: {report_path}")
    if plot_path is not None:
        from .plots import plot_report  # matplotlib is slow to import

        plot_report(report, plot_path)
        print(f"plot: {plot_path}")
    if hgrm_dir is not None:
        from .hgrm import UNIT, write_hgrm

        files = write_hgrm(report, hgrm_dir)
        print(
            f"hgrm: {hgrm_dir}/ ({len(files)} files, values in {UNIT[0]}; plot with an HdrHistogram plotter)"
        )
    if trace_path is not None:
        from .trace import write_trace

        write_trace(str(trace_path), runs[0].traces, runs[0].origin, options[0].clock)
        print(f"trace: {trace_path} ({len(runs[0].traces)} VPs; open in https://ui.perfetto.dev)")
    failed = [t for t in report.thresholds if not t.passed]
    if failed:
        print(
            f"tdvsm run: {len(failed)} of {len(report.thresholds)} threshold checks failed", file=sys.stderr
        )
        return THRESHOLD_FAILED
    return 0


def _thresholds(expressions: list[str]) -> list[Threshold]:
    try:
        return [parse_threshold(expression) for expression in expressions]
    except ThresholdError as exc:
        raise UsageError(str(exc)) from None


def _compare(args: argparse.Namespace) -> int:
    from .compare import load_report, render_comparison

    plot_path = check_file(args.plot, "--plot", PLOT_FORMATS)
    a, b = load_report(args.a), load_report(args.b)
    print(render_comparison(a, b, args.a, args.b))
    if plot_path is not None:
        from .plots import plot_comparison

        plot_comparison(a, b, plot_path, (Path(args.a).name, Path(args.b).name))
        print(f"plot: {plot_path}")
    return 0


def _print_shards(report: Report) -> None:
    cluster = report.cluster
    assert cluster is not None
    print(f"ray {cluster.ray_version} ({cluster.address}): {cluster.shards} shards")
    for run in report.runs:
        for shard in run.shards or []:
            if shard.status == "lost":
                print(
                    f"shard {shard.shard} (partitions {shard.partitions[0]}..{shard.partitions[1] - 1}) "
                    f"was lost in the {shard.lost_in} phase: {shard.reason}",
                    file=sys.stderr,
                )


def _ray(args: argparse.Namespace) -> RayRunner:
    if args.ray_runner is None:
        msg = "--backend ray is not available in this program"
        raise UsageError(msg)
    runner: RayRunner = args.ray_runner()
    return runner


def _workloads(args: argparse.Namespace) -> int:
    for name, summary in describe():
        print(f"{name:<16} {summary}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import run_bench  # the suite is only loaded when asked for

    if args.quick and args.check:
        msg = "--check judges the targets, --quick is a smoke run that passes no verdict: drop one"
        raise UsageError(msg)
    report_path = check_file(args.report, "--report", JSON)
    extra = args.bench_extra() if args.bench_extra is not None else None
    return run_bench(
        quick=args.quick,
        check=args.check,
        only=args.only,
        report=str(report_path) if report_path is not None else None,
        extra=extra,
        peers=args.peers,
        loop=args.loop,
    )
