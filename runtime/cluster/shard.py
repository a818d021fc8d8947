"""A shard: one whole tdvsm runtime running its share of an experiment's cells, driven by Ray calls.

``ShardHost`` is the body of the Ray actor (``coordinator.ShardActor`` wraps it) and the
``FleetShare`` its experiment runs; it knows nothing of Ray, so tests drive it directly too.
The experiment runs on an asyncio event loop in a thread of its own, and the guest programs run
inside it; the calls only start a phase and collect its result, so a run costs a handful of Ray
calls whatever its size:

* ``boot()`` runs the boot phase and returns it (a ``PhaseResult``), then the shard waits;
* ``operate(fleet_boot_ns)`` starts the operations phase once the whole fleet has booted (on
  every shard's clock at the same virtual time) and returns everything (a ``ShardResult``);
* ``progress()`` (a concurrency group of its own, so it answers while a phase runs) and
  ``pid()`` serve the coordinator.

Orders and results are msgspec bytes (``runtime.cluster.wire``); ``operate`` takes one int,
``progress`` and ``pid`` return plain numbers.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Final

import anyio
import anyio.to_thread

from ..lab.cells import FleetShare
from ..lab.experiment import run_experiment
from ..lab.records import Progress
from .wire import PhaseResult, ShardOrders, ShardResult, decode, encode, phase_result, trace_state

if TYPE_CHECKING:
    from .._host import Runtime
    from ..lab.records import PhaseData, RunData

__all__ = ("ShardError", "ShardHost")

#: Event-loop backend of every shard's runtime.
SHARD_BACKEND: Final = "asyncio"


class ShardError(RuntimeError):
    """Raised when a shard is driven out of order or its experiment failed (the message says how)."""


class _Progress(Progress):
    """The latest progress of the shard's phase, read from another thread."""

    def __init__(self) -> None:
        self.phase = ""
        self.done = 0.0
        self.total = 0.0

    def start(self, phase: str, total: float, unit: str) -> None:
        del unit
        self.phase, self.done, self.total = phase, 0.0, total

    def update(self, done: float) -> None:
        self.done = done


def _high_water(rt: Runtime) -> tuple[int, int]:
    partitions = rt.partitions
    return sum(p.statistics().mailbox_high_water for p in partitions), len(partitions)


class ShardHost(FleetShare):
    """Runs one share of an experiment on a runtime of its own (see the module docstring)."""

    def __init__(self, orders: bytes) -> None:
        self._orders = decode(orders, ShardOrders)
        super().__init__(range(*self._orders.cells))
        self._progress = _Progress()
        self._booted = threading.Event()
        self._go = threading.Event()
        self._done = threading.Event()
        self._fleet_boot_ns = 0
        self._boot: PhaseResult | None = None
        self._last_high_water = (0, 0)
        self._run: RunData | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._wall_start = 0

    def __repr__(self) -> str:
        o = self._orders
        return f"<ShardHost {o.shard} cells {o.cells[0]}..{o.cells[1]} phase={self._progress.phase!r}>"

    def pid(self) -> int:
        """The process id of the worker hosting this shard."""
        return os.getpid()

    def progress(self) -> tuple[str, float, float]:
        """(phase, units done, units expected) of the phase running now."""
        p = self._progress
        return p.phase, p.done, p.total

    async def after_boot(self, rt: Runtime, boot: PhaseData) -> int:
        """Hand the boot phase to ``boot()``'s caller; wait for ``operate`` to say when to go on."""
        self._boot = phase_result(boot, *_high_water(rt))
        self._booted.set()
        # The coordinator answers once every shard has booted; wait for it off the loop.
        await anyio.to_thread.run_sync(self._go.wait)
        return self._fleet_boot_ns

    def before_close(self, rt: Runtime) -> None:
        """Keep the mailbox high-water marks of the end of the run."""
        self._last_high_water = _high_water(rt)

    def _main(self) -> None:
        try:
            self._run = anyio.run(self._experiment, backend=SHARD_BACKEND)
        except BaseException as exc:  # reported to the coordinator by the next call
            self._error = exc
        finally:
            self._booted.set()
            self._done.set()

    async def _experiment(self) -> RunData:
        orders = self._orders
        return await run_experiment(orders.options, orders.costs, self._progress, share=self)

    def _raise_error(self, during: str) -> None:
        if self._error is not None:
            msg = f"shard {self._orders.shard}: the experiment failed during {during}: {self._error!r}"
            raise ShardError(msg) from self._error

    def boot(self) -> bytes:
        """Run the boot phase; return it (``PhaseResult`` bytes) and wait for ``operate``."""
        if self._thread is not None:
            msg = f"shard {self._orders.shard}: boot() called twice"
            raise ShardError(msg)
        self._wall_start = time.perf_counter_ns()
        self._thread = threading.Thread(
            target=self._main, name=f"tdvsm-shard-{self._orders.shard}", daemon=True
        )
        self._thread.start()
        self._booted.wait()
        self._raise_error("boot")
        assert self._boot is not None  # after_boot set it before _booted
        return encode(self._boot)

    def operate(self, fleet_boot_ns: int) -> bytes:
        """Start the operations phase at ``fleet_boot_ns``; return everything (``ShardResult`` bytes)."""
        if self._boot is None or self._go.is_set():
            msg = f"shard {self._orders.shard}: operate() before boot() or twice"
            raise ShardError(msg)
        if type(fleet_boot_ns) is not int or fleet_boot_ns < 0:
            msg = f"shard {self._orders.shard}: fleet_boot_ns must be an int >= 0, got {fleet_boot_ns!r}"
            raise ShardError(msg)
        self._fleet_boot_ns = fleet_boot_ns
        self._go.set()
        self._done.wait()
        self._raise_error("operations")
        run = self._run
        assert run is not None
        return encode(self._result(run))

    def _result(self, run: RunData) -> ShardResult:
        assert self._boot is not None
        phases = [self._boot, *(phase_result(phase, *self._last_high_water) for phase in run.phases[1:])]
        return ShardResult(
            shard=self._orders.shard,
            phases=phases,
            traces=[trace_state(t, run.origin) for t in run.traces],
            scheduler=dict(run.scheduler),
            wall_ns=time.perf_counter_ns() - self._wall_start,
        )
