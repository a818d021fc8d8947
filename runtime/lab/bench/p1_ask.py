"""P1: one ``vp.execute(Rdmsr)`` round trip against the raw ask floor of the same backend, and peers.

Alternated sample by sample in one event loop with that backend's raw ask floor (asyncio: a
Queue-fed actor task replying through a Future; trio: a minimal mailbox, a deque plus one parked
waiter); a direct method call for scale. With ``--peers``, every installed in-process peer that
runs on that backend (``peers``: thespian, pykka, xoscar) is then alternated with the same floor
in a round of its own, in the same event loop (a peer's threads must not slow tdvsm's samples
or the other way round). Target: p50 <= 1.5x the raw ask floor, and below every peer measured
in the same run.
"""

from __future__ import annotations

import time
from typing import Final

import anyio

from protocol import Msr, Rdmsr

from ..._host import open_runtime
from ._figure import Figure, percentile
from .floors import asyncio_floor, direct_call_ns, interleaved, trio_floor
from .loops import asyncio_name, run_asyncio
from .peers import PEERS, peer_ask

__all__ = ("FLOOR_RATIO", "measure_p1")

#: P1's target: at most this many times the raw ask floor's p50.
FLOOR_RATIO: Final = 1.5
_FLOORS: Final = {
    "asyncio": "raw asyncio Queue+Future ask",
    "trio": "raw trio minimal mailbox (deque + parked waiter)",
}


async def _p1_samples(
    backend: str, n: int, peers: list[str]
) -> tuple[list[list[int]], list[list[list[int]]]]:
    """([floor, tdvsm] samples, [floor, peer] samples of each peer's own round)."""
    floor = asyncio_floor() if backend == "asyncio" else trio_floor()
    async with floor as floor_ask:
        async with open_runtime(seed=1) as rt:
            vp = (await rt.create_partition(vp_count=1)).vp(0)
            action = Rdmsr(msr=Msr.LSTAR)

            async def vp_ask(_: int) -> object:
                return await vp.execute(action)

            ours = await interleaved([floor_ask, vp_ask], n)
        theirs = []
        for name in peers:
            async with peer_ask(name) as ask:
                theirs.append(await interleaved([floor_ask, ask], n))
    return ours, theirs


def check_costs(n: int) -> dict[str, float]:
    """Nanoseconds the boundary check (``protocol._validate``) takes per action, by kind.

    ``vp.execute`` checks an action once per object for immutable ones (the same object sent
    again is not checked again, as in the P1 loop), and every time for those holding a list.
    """
    from protocol import EnableVpVtl, RegisterAssoc, SetVpRegisters, Vtl, Wrmsr
    from protocol._validate import ACTION_VALIDATORS

    from ...testing import long_mode_context

    kinds = {
        "Rdmsr": Rdmsr(msr=Msr.LSTAR),
        "Wrmsr": Wrmsr(msr=Msr.LSTAR, value=0xFFFF_8000_0000_1000),
        "EnableVpVtl": EnableVpVtl(vp_index=1, target_vtl=Vtl.VTL1, context=long_mode_context()),
        "SetVpRegisters_16": SetVpRegisters(
            registers=[RegisterAssoc(name=0x20000 + i, value=i) for i in range(16)], target_vtl=Vtl.VTL0
        ),
    }
    costs = {}
    clock = time.perf_counter_ns
    for name, action in kinds.items():
        check = ACTION_VALIDATORS[type(action)]
        best = float("inf")
        for _ in range(5):
            start = clock()
            for _ in range(n):
                check(action)
            best = min(best, (clock() - start) / n)
        costs[f"check_{name}_ns"] = round(best, 1)
    return costs


def measure_p1(quick: bool, peers: list[str] | None = None) -> list[Figure]:
    """P1 on asyncio and trio; ``peers`` (installed peer names) are measured beside it."""
    n = 3_000 if quick else 30_000
    figures = []
    direct = direct_call_ns(n * 10)
    for backend, floor_name in _FLOORS.items():
        here = [p for p in peers or [] if PEERS[p] in ("any", backend)]
        if backend == "asyncio":
            (floor, ours), theirs = run_asyncio(_p1_samples, backend, n, here)
            label = asyncio_name()
        else:
            (floor, ours), theirs = anyio.run(_p1_samples, backend, n, here, backend=backend)
            label = backend
        p50, floor_p50 = percentile(ours, 0.5), percentile(floor, 0.5)
        ratio = p50 / floor_p50
        peer_p50 = {name: percentile(samples[1], 0.5) for name, samples in zip(here, theirs, strict=True)}
        peer_floor = {name: percentile(samples[0], 0.5) for name, samples in zip(here, theirs, strict=True)}
        fastest = min(peer_p50.values(), default=None)
        met = ratio <= FLOOR_RATIO and (fastest is None or p50 < fastest)
        detail: dict[str, float | str] = {
            "direct_call_us": round(direct / 1000, 4),
            "ratio_to_direct_call": round(p50 / direct, 1),
            "p99_us": percentile(ours, 0.99) / 1000,
            "floor_p99_us": percentile(floor, 0.99) / 1000,
            "peers": ", ".join(here) if here else "not measured (--peers)",
        }
        if fastest is not None:
            detail["ratio_to_fastest_peer"] = round(p50 / fastest, 3)
        if backend == "asyncio":
            detail |= check_costs(n // 10)
        figures.append(
            Figure(
                id="P1",
                name=f"vp.execute(Rdmsr) p50, {label}",
                value=p50 / 1000,
                unit="us",
                floor=floor_p50 / 1000,
                floor_name=floor_name.replace("asyncio", label),
                ratio=round(ratio, 3),
                target=f"<={FLOOR_RATIO}x, <peers" if here else f"<={FLOOR_RATIO}x",
                met=None if quick else met,
                detail=detail,
            )
        )
        for name, value in peer_p50.items():
            figures.append(
                Figure(
                    id="P1",
                    name=f"  peer {name} p50, {label}",
                    value=value / 1000,
                    unit="us",
                    floor=peer_floor[name] / 1000,
                    floor_name=floor_name,
                    ratio=round(value / peer_floor[name], 3),
                    target="(a peer)",
                    met=None,
                    detail={"tdvsm_over_peer": round(p50 / value, 3)},
                )
            )
    return figures
