"""P1: one ``vp.execute(Rdmsr)`` round trip against the raw ask floor of the same backend.

Alternated sample by sample in one event loop with that backend's raw ask floor (asyncio: a
Queue-fed actor task replying through a Future; trio: a minimal mailbox, a deque plus one parked
waiter); a direct method call for scale. Target: <= 1.5x the raw ask floor, and below the fastest
in-process peer of PERFORMANCE.md (thespian, 9.8 us).
"""

from __future__ import annotations

from typing import Final

import anyio

from protocol import Rdmsr
from protocol._x86 import Msr

from ..._host import open_runtime
from ._figure import Figure, percentile
from .floors import asyncio_floor, direct_call_ns, interleaved, trio_floor

__all__ = ("PEER_P50_NS", "measure_p1")

#: PERFORMANCE.md's fastest in-process peer (thespian simpleSystemBase ask p50).
PEER_P50_NS: Final = 9_800


async def _p1_samples(backend: str, n: int) -> list[list[int]]:
    floor = asyncio_floor() if backend == "asyncio" else trio_floor()
    async with floor as floor_ask, open_runtime(seed=1) as rt:
        vp = (await rt.create_partition(vp_count=1)).vp(0)
        action = Rdmsr(msr=Msr.LSTAR)

        async def vp_ask(_: int) -> object:
            return await vp.execute(action)

        return await interleaved([floor_ask, vp_ask], n)


def measure_p1(quick: bool) -> list[Figure]:
    n = 3_000 if quick else 30_000
    figures = []
    direct = direct_call_ns(n * 10)
    for backend, floor_name in (
        ("asyncio", "asyncio Queue+Future ask"),
        ("trio", "trio minimal mailbox (deque + parked waiter)"),
    ):
        floor, ours = anyio.run(_p1_samples, backend, n, backend=backend)
        p50, floor_p50 = percentile(ours, 0.5), percentile(floor, 0.5)
        ratio = p50 / floor_p50
        figures.append(
            Figure(
                id="P1",
                name=f"vp.execute(Rdmsr) round trip p50, {backend}",
                value=p50 / 1000,
                unit="us",
                floor=floor_p50 / 1000,
                floor_name=floor_name,
                ratio=round(ratio, 3),
                target=f"<= 1.5x floor and < {PEER_P50_NS / 1000} us (thespian)",
                met=ratio <= 1.5 and p50 < PEER_P50_NS,
                detail={
                    "direct_call_us": round(direct / 1000, 4),
                    "ratio_to_direct_call": round(p50 / direct, 1),
                    "p99_us": percentile(ours, 0.99) / 1000,
                    "floor_p99_us": percentile(floor, 0.99) / 1000,
                },
            )
        )
    return figures
