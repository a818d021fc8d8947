"""Whether a fleet fits in memory: bytes per booted VP measured on a sample, against what is free.

``tdvsm run --partitions 10000000`` would otherwise spend minutes growing towards the memory
limit before anything failed. When a fleet could need more than a small part of the free
memory (at ``LOWER_BOUND_PER_VP``), ``check_fleet`` boots a sample of ``SAMPLE_VPS`` VPs in a
throwaway runtime, measures their Python allocations with ``tracemalloc`` (runtime state and the
experiment's per-VP objects), and multiplies by the fleet's size and by ``MARGIN`` (the
allocator's overhead: on the project's machine resident memory grew 8.2 KB per booted VP where
``tracemalloc`` counted 8.0 KB). A fleet whose estimate exceeds the available memory is refused
unless forced.
"""

from __future__ import annotations

import gc
import os
import random
import tracemalloc
from pathlib import Path
from typing import Final

import anyio
import msgspec

from .._clock import VirtualClock
from .._host import open_runtime
from .costs import CostModel
from .metrics import PhaseRecorder
from .usage import UsageError
from .workloads import Driver, Guest, boot_partition

__all__ = (
    "LOWER_BOUND_PER_VP",
    "MARGIN",
    "SAMPLE_VPS",
    "FleetEstimate",
    "available_memory",
    "check_fleet",
    "measure_bytes_per_vp",
)

#: VPs booted to measure the bytes a VP takes.
SAMPLE_VPS: Final = 64
#: Resident memory over traced allocations (allocator overhead, fragmentation), with room to spare.
MARGIN: Final = 1.2
#: No VP takes less than this (an idle one takes ~1.8 KB): fleets whose lower bound is under
#: ``_SKIP_FRACTION`` of the free memory are not measured at all.
LOWER_BOUND_PER_VP: Final = 1_500
_SKIP_FRACTION: Final = 0.05


class FleetEstimate(msgspec.Struct, frozen=True, kw_only=True):
    """The memory a fleet is expected to take, and what the machine has free."""

    vps: int
    bytes_per_vp: int
    sample_vps: int
    estimated_bytes: int
    available_bytes: int

    def describe(self) -> str:
        """One line: fleet size, estimate, the measurement behind it and the free memory."""
        return (
            f"{self.vps:,} VPs need about {_gib(self.estimated_bytes)} "
            f"({self.bytes_per_vp:,} B per booted VP, measured on {self.sample_vps} VPs, "
            f"x{MARGIN} for the allocator); {_gib(self.available_bytes)} available"
        )


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**28 else f"{n / 2**20:,.0f} MiB"


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().split()[0]
    except (OSError, IndexError):
        return None
    return int(text) if text.isdigit() else None


def available_memory() -> int | None:
    """Bytes this process may still allocate: MemAvailable, lowered by a cgroup limit if any."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    # cgroup v2, then v1: a container's limit may be far below the machine's free memory.
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 2**60:
            available = min(available, max(limit - usage, 0))
            break
    return available


async def _sample(partitions: int, vps: int) -> float:
    async with open_runtime(seed=1, clock="virtual") as rt:
        driver = Driver(0, VirtualClock(), PhaseRecorder(0, 1_000), CostModel())
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            kept = []
            for _ in range(partitions):
                partition = await rt.create_partition(vp_count=vps)
                guests = [Guest(partition.vp(i), partition.partition_id, i, driver) for i in range(vps)]
                await boot_partition(guests, random.Random(1))
                kept.append(guests)
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
    return used / (partitions * vps)


def measure_bytes_per_vp(vps: int) -> tuple[int, int]:
    """(bytes per booted VP, VPs sampled), booting partitions of ``vps`` VPs in a scratch runtime."""
    partitions = max(1, SAMPLE_VPS // vps)
    per_vp = anyio.run(_sample, partitions, vps, backend="asyncio")
    return round(per_vp), partitions * vps


def check_fleet(partitions: int, vps: int, *, force: bool) -> FleetEstimate | None:
    """The fleet's memory estimate (None when it is clearly small or memory is unknown).

    Raises:
        UsageError: the estimate exceeds the available memory and ``force`` is not set.
    """
    total = partitions * vps
    available = available_memory()
    if available is None or total * LOWER_BOUND_PER_VP < _SKIP_FRACTION * available:
        return None
    per_vp, sampled = measure_bytes_per_vp(vps)
    estimate = FleetEstimate(
        vps=total,
        bytes_per_vp=per_vp,
        sample_vps=sampled,
        estimated_bytes=round(total * per_vp * MARGIN),
        available_bytes=available,
    )
    if estimate.estimated_bytes > available and not force:
        msg = f"--partitions {partitions} --vps {vps}: {estimate.describe()}; use a smaller fleet or --force"
        raise UsageError(msg)
    return estimate
