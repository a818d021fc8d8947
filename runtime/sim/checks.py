"""What a simulation checks after every step: partition invariants, monotone state, coverage.

The engine itself checks each VP's invariants after each of its steps (``check_invariants``:
a violation is a crash nobody injected, which the seed's crash accounting catches). This hook
adds, after every step of any actor of a partition: DOMAIN 5's partition-wide invariants
(items 7-9), the VM-entry checks of DOMAIN 7.2 on every VTL that passed them, the monotone
halves of item 7 (``enabled_on_any_vp`` and ``protections_enabled``
never go back), and the "sometimes" events only the scheduler sees (restarts while callers
wait, an answered hypercall finished after a restart, window commits, cut passes, restart
intensity exceeded).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors import partition_violations
from actors._entry import entry_failures

from .faults import InjectedFault

if TYPE_CHECKING:
    from .._cells import PartitionCells, VpCell
    from .._scheduler import BatchingScheduler

__all__ = ("Checks",)


class Checks:
    """The scheduler's ``StepHooks`` during a simulation."""

    def __init__(self, world: Any, scheduler: BatchingScheduler) -> None:
        self._world = world
        self._scheduler = scheduler
        self._monotone: dict[int, tuple[bool, bool]] = {}
        self._uninjected = 0
        self.steps_checked = 0

    def before_vp_step(self, cell: VpCell) -> float:
        """A slow vCPU, per the fault plan."""
        delay: float = self._world.injector.before_step(cell)
        return delay

    def injected(self, point: str) -> None:
        """The injector raised at ``point``."""
        if point.startswith("supervisor"):
            self._world.history.hit("supervisor_crash_rolled_back")

    def crashed(self, where: str, error: BaseException) -> None:
        """A step crashed: unless the injector did it, that is a bug (its first sighting)."""
        if not isinstance(error, InjectedFault):
            self._uninjected += 1
            if self._uninjected == 1:
                self._world.fail(f"a crash nobody injected in {where}: {error!r}")

    def after_step(self, partition: PartitionCells) -> None:
        """Check ``partition`` after one of its actors stepped."""
        self.steps_checked += 1
        world = self._world
        history = world.history
        scheduler = self._scheduler
        if partition.failure is not None:
            if "restart intensity" in partition.failure:
                history.hit("restart_intensity_exceeded")
            world.chaos_wakeup.set()  # the chaos task replaces failed partitions
            return
        state = partition.supervisor.state
        problems = partition_violations(state, [cell.actor.state for cell in partition.cells])
        if problems:
            world.fail(f"partition {partition.partition_id}: {'; '.join(problems)}")
        vtl1 = state.vtl1
        now = (vtl1 is not None and vtl1.enabled_on_any_vp, vtl1 is not None and vtl1.protections_enabled)
        before = self._monotone.get(partition.partition_id, (False, False))
        if (before[0] and not now[0]) or (before[1] and not now[1]):
            world.fail(f"partition {partition.partition_id}: enabled_on_any_vp/protections_enabled went back")
        self._monotone[partition.partition_id] = now
        config = partition.config
        for cell in partition.cells:
            # DOMAIN 7.2: a VTL whose committed state already passed its VM-entry checks (none
            # pending, nothing staged) still passes them: the runtime checks at every entry.
            st = cell.actor.state
            active = st.vtls[st.active_vtl]
            if st.running and not cell.busy and not active.staged_updates and not active.entry_check:
                failed = entry_failures(
                    active.regs.read_committed,
                    active.vmcs,
                    config.vmx_cr4_fixed1,
                    config.physical_address_bits,
                )
                if failed:
                    world.fail(f"{cell}: entered although its VM-entry checks fail: {'; '.join(failed)}")
            if cell.restarting:
                if len(cell.mailbox):
                    history.hit("restart_while_calls_wait")
                if cell.resume is not None:
                    history.hit("restart_finishes_an_answered_hypercall")
        if scheduler.window_commits:
            history.sometimes["window_commit"] = scheduler.window_commits
        if scheduler.cut_passes:
            history.sometimes["pass_cut_short"] = scheduler.cut_passes
