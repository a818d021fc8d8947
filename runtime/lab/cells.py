"""How an experiment's fleet splits into cells: independent groups of partitions and their drivers.

A *cell* is a set of consecutive partitions together with the drivers that own their VPs; no
driver and no partition belongs to two cells, so a cell's measurements depend only on the
options and on what happens inside it. With ``N`` drivers and ``P`` partitions of ``V`` VPs:

* ``N <= P``: cell ``c`` is driver ``c`` with partitions ``[c*P//N, (c+1)*P//N)``; the driver
  boots them in order, then runs operations on all their VPs;
* ``N > P``: cell ``c`` is partition ``c`` with drivers ``[c*N//P, (c+1)*N//P)``; the first of
  them boots it, then driver ``j`` of the ``k`` owns its VPs ``[j*V//k, (j+1)*V//k)``.

A run of the whole fleet and runs of disjoint shares of its cells (``FleetShare``, as
``runtime.cluster`` runs them on Ray shards) measure the same things: every random choice is
seeded by the root seed and the global index of the driver making it (a boot by the root seed
alone, the traced VPs drawn from the whole fleet), never by how the cells were grouped.
``split`` gives ``S`` shares of consecutive cells. ``ShardReport`` and ``ClusterReport`` are what
a report says about a sharded run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal, final

import msgspec

if TYPE_CHECKING:
    from .._host import Runtime
    from .records import PhaseData

__all__ = ("Cells", "ClusterReport", "FleetShare", "ShardReport")


@final
class Cells:
    """The cells of a fleet of ``partitions`` x ``vps`` VPs driven by ``drivers`` drivers."""

    __slots__ = ("count", "drivers", "partitions", "vps")

    def __init__(self, partitions: int, vps: int, drivers: int) -> None:
        if partitions < 1 or vps < 1 or drivers < 1:
            msg = f"Cells: partitions, vps and drivers must be >= 1, got {partitions}, {vps}, {drivers}"
            raise ValueError(msg)
        self.partitions = partitions
        self.vps = vps
        self.drivers = drivers
        #: Number of cells.
        self.count: Final = min(drivers, partitions)

    def __repr__(self) -> str:
        return f"<Cells {self.count} of {self.partitions} x {self.vps} VPs, {self.drivers} drivers>"

    def _check(self, cells: range) -> None:
        if cells.step != 1 or not 0 <= cells.start <= cells.stop <= self.count:
            msg = f"cells {cells!r} out of range 0..{self.count}"
            raise ValueError(msg)

    def partitions_of(self, cells: range) -> range:
        """The partitions of ``cells`` (consecutive)."""
        self._check(cells)
        n, p = self.drivers, self.partitions
        if n <= p:
            return range(cells.start * p // n, cells.stop * p // n)
        return cells

    def drivers_of(self, cells: range) -> range:
        """The drivers of ``cells`` (consecutive)."""
        self._check(cells)
        n, p = self.drivers, self.partitions
        if n <= p:
            return cells
        return range(cells.start * n // p, cells.stop * n // p)

    def cell_of_driver(self, driver: int) -> int:
        """The cell ``driver`` belongs to."""
        n, p = self.drivers, self.partitions
        if not 0 <= driver < n:
            msg = f"driver {driver} out of range 0..{n - 1}"
            raise ValueError(msg)
        # N > P: the largest c with c*N//P <= driver.
        return driver if n <= p else ((driver + 1) * p - 1) // n

    def boots(self, driver: int) -> range:
        """The partitions ``driver`` boots, in order."""
        cell = self.cell_of_driver(driver)
        if self.drivers <= self.partitions:
            return self.partitions_of(range(cell, cell + 1))
        first = self.drivers_of(range(cell, cell + 1)).start
        return range(cell, cell + 1) if driver == first else range(0)

    def owns(self, driver: int) -> list[tuple[int, int]]:
        """The (partition, VP index) pairs ``driver`` runs operations on, in order."""
        cell = self.cell_of_driver(driver)
        v = self.vps
        if self.drivers <= self.partitions:
            return [(p, i) for p in self.partitions_of(range(cell, cell + 1)) for i in range(v)]
        mates = self.drivers_of(range(cell, cell + 1))
        j, k = driver - mates.start, len(mates)
        return [(cell, i) for i in range(j * v // k, (j + 1) * v // k)]

    def split(self, shares: int) -> list[range]:
        """``shares`` ranges of consecutive cells, as even as the cells allow.

        Raises:
            ValueError: more shares than cells.
        """
        c = self.count
        if not 1 <= shares <= c:
            msg = f"{shares} shares of {c} cells: at most one share per cell"
            raise ValueError(msg)
        return [range(s * c // shares, (s + 1) * c // shares) for s in range(shares)]


class FleetShare:
    """The cells one runtime runs; the whole fleet unless a cluster shard runs a share of it.

    ``after_boot`` is awaited between the two phases with this share's boot phase; it returns
    the boot duration of the whole fleet (the operations phase starts after it, on every
    share's clock alike). ``before_close`` sees the runtime once more before it closes. Both
    default to doing nothing: a share that is the whole fleet needs no one else.
    """

    def __init__(self, cells: range) -> None:
        self.cells = cells

    async def after_boot(self, rt: Runtime, boot: PhaseData) -> int:
        """Called when this share has booted; returns the fleet's boot duration (ns)."""
        del rt
        return boot.duration_ns

    def before_close(self, rt: Runtime) -> None:
        """Called after the last phase, while ``rt`` is still open."""


class ShardReport(msgspec.Struct, frozen=True, kw_only=True):
    """One shard of a sharded run (``--backend ray``): its share of the cells, and its fate.

    ``cells``, ``partitions`` and ``drivers`` are ``[first, stop)`` ranges. ``status`` is
    ``ok``, or ``lost`` when its Ray worker died: ``lost_in`` names the phase, ``reason`` says
    what Ray reported, and its partitions are listed as failed in that phase (README "Ray").
    """

    shard: int
    cells: list[int]
    partitions: list[int]
    drivers: list[int]
    status: Literal["ok", "lost"]
    lost_in: str | None = None
    reason: str | None = None


class ClusterReport(msgspec.Struct, frozen=True, kw_only=True):
    """Where a sharded run ran: Ray's version, the cluster (``local`` or the address) and shards."""

    backend: Literal["ray"]
    ray_version: str
    address: str
    shards: int
