"""No pass holds the loop (issue 9, PERFORMANCE P8): a pass yields once it has run its time budget."""

from __future__ import annotations

from typing import Any

import anyio

from protocol import Rdmsr, StartVirtualProcessor, Vtl, Wrmsr
from protocol._x86 import Msr
from runtime import open_runtime
from tests.guest import long_mode_context


async def _started_vps(rt: Any, partitions: int, **config: Any) -> list[Any]:
    """Every VP of ``partitions`` new 4-VP partitions (``config``), VPs 1-3 started by VP 0."""
    vps = []
    for _ in range(partitions):
        part = await rt.create_partition(vp_count=4, **config)
        for index in (1, 2, 3):
            start = StartVirtualProcessor(vp_index=index, target_vtl=Vtl.VTL0, context=long_mode_context())
            await part.vp(0).execute(start)
        vps += [part.vp(i) for i in range(4)]
    return vps


async def test_a_pass_yields_to_the_host_after_its_budget() -> None:
    """With a budget spent at once, a pass runs one clock check's worth (16 steps) and yields."""
    async with open_runtime(pass_budget=1e-9) as rt:
        vps = await _started_vps(rt, 25)
        scheduler = rt._scheduler
        gaps: list[int] = []
        done = False

        async def host() -> None:  # the embedding program's own task
            last = scheduler.steps
            while not done:
                await anyio.lowlevel.checkpoint()
                gaps.append(scheduler.steps - last)
                last = scheduler.steps

        async def driver(vp: object) -> None:
            for _ in range(4):
                await vp.execute(Rdmsr(msr=Msr.EFER))  # type: ignore[attr-defined]

        async with anyio.create_task_group() as tg:
            tg.start_soon(host)
            async with anyio.create_task_group() as drivers:
                for vp in vps:
                    drivers.start_soon(driver, vp)
            done = True
        stats = rt.statistics().scheduler
        assert stats.cut_passes > 0
        assert stats.largest_pass > 32  # passes had more to do than they were allowed ...
        # ... and the host task ran at least every other pass (trio shuffles each batch of
        # runnable tasks, so the runner may run last in one batch and first in the next).
        assert max(gaps) <= 2 * 32
        assert stats.longest_pass_ns > 0


async def test_the_default_budget_keeps_passes_whole_when_they_are_short() -> None:
    """A short pass is never cut: the budget only bounds long ones."""
    async with open_runtime() as rt:
        vp = (await rt.create_partition(vp_count=1)).vp(0)
        for _ in range(10):
            await vp.execute(Rdmsr(msr=Msr.EFER))
        assert rt.statistics().scheduler.cut_passes == 0


async def test_window_commits_yield_to_the_host_after_the_budget() -> None:
    """The batch-window flusher is a pass too: 400 windows closing at once are committed in slices."""
    async with open_runtime(pass_budget=1e-9) as rt:
        # Windows of 0.2 s: none closes before the host starts counting, even on a loaded machine.
        vps = await _started_vps(rt, 100, batch_window=0.2)
        scheduler = rt._scheduler
        with anyio.fail_after(5):
            while scheduler._dirty:  # noqa: ASYNC110  # the boot's windows close first: all 400
                await anyio.sleep(0.01)  # below then open together (none joins an older one)
        write = Wrmsr(msr=Msr.SYSENTER_CS, value=0x10)  # a VMCS field: a window opens per VP
        async with anyio.create_task_group() as tg:
            for vp in vps:
                tg.start_soon(vp.execute, write)
        assert len(scheduler._dirty) == len(vps)
        cut = scheduler.cut_passes
        commits = scheduler.window_commits
        gaps: list[int] = []
        with anyio.fail_after(5):
            while scheduler._dirty:
                await anyio.lowlevel.checkpoint()  # the host: how many commits between its turns
                gaps.append(scheduler.window_commits - commits)
                commits = scheduler.window_commits
        assert scheduler.cut_passes > cut
        assert max(gaps) <= 2 * 32
