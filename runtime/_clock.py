"""Clocks of an experiment: the real monotonic clock and deterministic virtual clocks.

Both count integer nanoseconds and offer the same two operations a load driver needs: ``now()``
and ``wait_until(t)``. The real clock reads ``time.perf_counter_ns`` and sleeps; a virtual
clock is plain data that only moves when it is told to: ``advance`` by the modelled cost of
an action (see ``runtime.costs``), or ``wait_until`` an intended send time, which jumps
instead of sleeping. Nothing about a virtual clock depends on the host, the event loop or
the order in which tasks ran, so a run measured with virtual clocks is reproducible.

Each load driver owns one ``VirtualClock`` (a driver runs one guest operation at a time, so
its clock is the timeline of the VPs it drives); the phase's virtual duration is the latest
of its drivers' clocks.
"""

from __future__ import annotations

import time
from typing import Protocol, final

import anyio

__all__ = ("Clock", "RealClock", "VirtualClock")


class Clock(Protocol):
    """What a load driver needs from a clock (nanoseconds)."""

    virtual: bool

    def now(self) -> int:
        """The current time in nanoseconds."""
        ...

    async def wait_until(self, t: int) -> None:
        """Return at time ``t`` or later; a checkpoint on the real clock."""
        ...


@final
class RealClock:
    """The host's monotonic clock (``time.perf_counter_ns``); ``wait_until`` sleeps."""

    virtual = False

    def now(self) -> int:
        """Nanoseconds of the monotonic performance counter."""
        return time.perf_counter_ns()

    async def wait_until(self, t: int) -> None:
        """Sleep until ``t`` (returns at once, after a checkpoint, if ``t`` has passed)."""
        delay = t - time.perf_counter_ns()
        await anyio.sleep(delay / 1e9 if delay > 0 else 0)


@final
class VirtualClock:
    """Modelled time of one driver: starts at ``start`` and moves only when told to.

    Invariant: ``t`` never decreases.
    """

    __slots__ = ("t",)

    virtual = True

    def __init__(self, start: int = 0) -> None:
        self.t = start

    def __repr__(self) -> str:
        return f"<VirtualClock t={self.t}ns>"

    def now(self) -> int:
        """The virtual time in nanoseconds."""
        return self.t

    def advance(self, ns: int) -> int:
        """Move forward by ``ns`` (the modelled cost of what just happened); return the new time."""
        if ns > 0:
            self.t += ns
        return self.t

    def skip_to(self, t: int) -> None:
        """Jump to ``t`` if it lies ahead (``wait_until`` without the ``await``)."""
        if t > self.t:
            self.t = t

    async def wait_until(self, t: int) -> None:
        """Jump to ``t`` if it lies ahead; never sleeps and is not a checkpoint."""
        if t > self.t:
            self.t = t
