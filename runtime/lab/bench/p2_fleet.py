"""P2: a fleet of 10,000 VPs driven by 100 (and 1,000) concurrent clients against a raw asyncio fleet.

2,500 partitions x 4 VPs (all started), closed-loop drivers executing ``Rdmsr`` on random VPs,
against a raw asyncio fleet (10,000 Queue-fed actor tasks, the same drivers); both fleets live
in one event loop and take turns (4 rounds each per driver count; every round starts with
frozen GC generations, so neither pays for the other's garbage). Target, at 100 drivers: >= 1.0x
the raw fleet's asks/s, p99 <= 3 ms. Shown beside it: the same at 1,000 drivers, p99 and p99.9
of each against the raw fleet's, and each fleet's peak RSS under load (each alone in a fresh
process, booted and driven by 100 drivers for one round).
"""

from __future__ import annotations

import gc
import json
import random
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final

import anyio
import msgspec

from protocol import Rdmsr, StartVirtualProcessor, Vtl
from protocol._x86 import Msr

from ..._host import open_runtime
from ...testing import long_mode_context
from ._figure import Figure, percentile
from .floors import Ask, raw_fleet
from .loops import asyncio_name, loop_suffix, run_asyncio
from .p4_memory import probe

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable

    from ..._host import Runtime

__all__ = ("FLOOR_RATIO", "boot_fleet", "drive_fleet", "loaded_rss_probe", "measure_p2")

#: P2's target: at least this many times the raw fleet's asks per second.
FLOOR_RATIO: Final = 1.0
#: Driver counts: the target's (PERFORMANCE.md P2), then the tail's.
_DRIVERS: Final = (100, 1_000)


async def boot_fleet(rt: Runtime, partitions: int) -> Ask:
    """``partitions`` x 4 VPs of ``rt``, every AP started; ``ask(i)`` runs Rdmsr on VP ``i``."""
    parts = [await rt.create_partition(vp_count=4) for _ in range(partitions)]
    context = long_mode_context(0x1000)
    for part in parts:
        for i in (1, 2, 3):
            start = StartVirtualProcessor(vp_index=i, target_vtl=Vtl.VTL0, context=context)
            await part.vp(0).execute(start)
    vps = [part.vp(i) for part in parts for i in range(4)]
    action = Rdmsr(msr=Msr.LSTAR)

    def ask(i: int) -> Awaitable[object]:
        # The call itself, as the raw fleet's ask is: no coroutine of the bench's around it.
        return vps[i].execute(action)

    return ask


@asynccontextmanager
async def _our_fleet(partitions: int) -> AsyncIterator[Ask]:
    """``boot_fleet`` in a runtime of its own."""
    async with open_runtime(seed=1) as rt:
        yield await boot_fleet(rt, partitions)


async def drive_fleet(
    ask: Ask, targets: int, clients: int, seconds: float, seed: int
) -> tuple[int, int, list[int]]:
    """``clients`` closed-loop clients asking random targets for ``seconds``: (asks, ns, latencies)."""
    latencies: list[int] = []
    clock = time.perf_counter_ns
    deadline = clock() + int(seconds * 1e9)

    async def client(c: int) -> None:
        rng = random.Random(seed * 1000 + c)
        record = latencies.append
        while True:
            start = clock()
            if start >= deadline:
                return
            await ask(rng.randrange(targets))
            record(clock() - start)

    started = clock()
    async with anyio.create_task_group() as tg:
        for c in range(clients):
            tg.start_soon(client, c)
    return len(latencies), clock() - started, latencies


class _Side(msgspec.Struct, kw_only=True):
    """What one fleet did over the rounds of one driver count."""

    asks: int = 0
    ns: int = 0
    latencies: list[int] = []

    @property
    def rate(self) -> float:
        return self.asks * 1e9 / self.ns


async def _p2_samples(
    partitions: int, drivers: tuple[int, ...], seconds: float, rounds: int
) -> dict[int, tuple[_Side, _Side]]:
    """Per driver count: what the raw fleet and ours did."""
    targets = partitions * 4
    async with raw_fleet(targets) as raw, _our_fleet(partitions) as ours:
        gc.collect()
        results: dict[int, tuple[_Side, _Side]] = {}
        try:
            for clients in drivers:
                sides = (_Side(), _Side())
                for r in range(rounds):  # alternate the two fleets so noise hits both alike
                    for side, ask in zip(sides, (raw, ours), strict=True):
                        # Each round starts with empty GC generations: a collection in one
                        # fleet's round walks only what that round allocated, not the other
                        # fleet's parked objects (the raw actors park on fresh Futures).
                        gc.freeze()
                        n, ns, samples = await drive_fleet(ask, targets, clients, seconds / rounds, r)
                        side.asks += n
                        side.ns += ns
                        side.latencies += samples
                results[clients] = sides
        finally:
            gc.unfreeze()
    return results


def _peak_rss() -> int:
    """This process's peak resident set (VmHWM, bytes); unlike ru_maxrss, not the parent's."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    msg = "no VmHWM in /proc/self/status"
    raise RuntimeError(msg)


def loaded_rss_probe(fleet: str, partitions: int, clients: int, seconds: float) -> None:
    """Drive one fleet (``"ours"`` or ``"raw"``) alone in this (fresh) process; print peak RSS."""

    async def drive() -> None:
        targets = partitions * 4
        fleet_cm = _our_fleet(partitions) if fleet == "ours" else raw_fleet(targets)
        async with fleet_cm as ask:
            gc.collect()
            gc.freeze()
            await drive_fleet(ask, targets, clients, seconds, 1)
            print(json.dumps({"rss": _peak_rss()}))

    run_asyncio(drive)


def _tail_figures(clients: int, raw: _Side, ours: _Side) -> list[Figure]:
    """p99 and p99.9 of one driver count beside the raw fleet's (no verdict of their own)."""
    rows = []
    for label, q in (("p99", 0.99), ("p99.9", 0.999)):
        value, floor = percentile(ours.latencies, q), percentile(raw.latencies, q)
        rows.append(
            Figure(
                id="P2",
                name=f"  {label} latency, {clients} drivers",
                value=value / 1000,
                unit="us",
                floor=floor / 1000,
                floor_name="the raw asyncio fleet's, same drivers",
                ratio=round(value / floor, 3),
                target="<=3ms" if label == "p99" and clients == _DRIVERS[0] else "(shown)",
                met=None,
            )
        )
    return rows


def measure_p2(quick: bool) -> list[Figure]:
    """P2 at 100 drivers (the target) and 1,000 (shown), the tail of each, and RSS under load."""
    partitions, seconds = (250, 0.6) if quick else (2_500, 4.0)
    drivers = tuple(d // 5 for d in _DRIVERS) if quick else _DRIVERS
    results = run_asyncio(_p2_samples, partitions, drivers, seconds, 4)
    loop = asyncio_name()
    figures = []
    for clients, (raw, ours) in results.items():
        ratio = ours.rate / raw.rate
        p99 = percentile(ours.latencies, 0.99)
        target = clients == drivers[0]  # PERFORMANCE.md P2: 100 drivers
        figures.append(
            Figure(
                id="P2",
                name=f"fleet {partitions}x4 VPs, {clients} drivers{loop_suffix()}",
                value=round(ours.rate),
                unit="/s",
                floor=round(raw.rate),
                floor_name=f"raw {loop} fleet ({partitions * 4} Queue actors)",
                ratio=round(ratio, 3),
                target=f">={FLOOR_RATIO}x, p99<=3ms" if target else "(shown)",
                met=ratio >= FLOOR_RATIO and p99 <= 3e6 if target else None,
                detail={
                    "p50_us": percentile(ours.latencies, 0.5) / 1000,
                    "p99_us": p99 / 1000,
                    "p999_us": percentile(ours.latencies, 0.999) / 1000,
                    "floor_p50_us": percentile(raw.latencies, 0.5) / 1000,
                    "floor_p99_us": percentile(raw.latencies, 0.99) / 1000,
                    "floor_p999_us": percentile(raw.latencies, 0.999) / 1000,
                },
            )
        )
        figures += _tail_figures(clients, raw, ours)
    # RSS under load: each fleet alone in a fresh process, booted and driven by the target's
    # drivers for a round; the peak resident set (VmHWM), interpreter included.
    call = f"({partitions}, {drivers[0]}, {seconds / 4})"
    rss = probe(f"loaded_rss_probe('ours', *{call})", __name__)["rss"]
    raw_rss = probe(f"loaded_rss_probe('raw', *{call})", __name__)["rss"]
    figures.append(
        Figure(
            id="P2",
            name=f"  peak RSS under load, {partitions * 4} VPs",
            value=rss / 2**20,
            unit="MiB",
            floor=raw_rss / 2**20,
            floor_name="the raw asyncio fleet's, alone in its process too",
            ratio=round(rss / raw_rss, 3),
            target="(shown)",
            met=None,
        )
    )
    return figures
