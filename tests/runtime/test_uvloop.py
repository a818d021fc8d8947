"""The runtime on uvloop (the optional extra): the same outcomes as on asyncio's own loop."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from protocol import Rdmsr, StartVirtualProcessor, Vtl, Wrmsr
from protocol._x86 import Msr
from runtime import open_runtime
from runtime.testing import describe
from tests.guest import long_mode_context

uvloop = pytest.importorskip("uvloop")


async def _transcript() -> tuple[str, list[str]]:
    """A few actions on a two-VP partition: the loop's type and what the guest saw."""
    seen: list[str] = []
    async with open_runtime(seed=1) as rt:
        # Windows of 0.5 s: none closes between a step and the check below on a loaded machine.
        part = await rt.create_partition(vp_count=2, batch_window=0.5)
        vp = part.vp(0)
        start = StartVirtualProcessor(vp_index=1, target_vtl=Vtl.VTL0, context=long_mode_context())
        actions = [
            start,
            Wrmsr(msr=Msr.LSTAR, value=0xFFFF_8000_0000_1000),
            Rdmsr(msr=0x1234_5678),  # not backed: #GP
            Rdmsr(msr=Msr.LSTAR),
            Wrmsr(msr=Msr.SYSENTER_CS, value=0x10),  # a VMCS field: it waits for a batch window
        ]
        seen += [describe(await vp.execute(action)) for action in actions]
        seen.append(describe(await part.vp(1).execute(Rdmsr(msr=Msr.EFER))))
        assert part.statistics().vps[0].staged_updates == 2  # GUEST_SYSENTER_CS and the RIP advance
        with anyio.fail_after(5):  # the batch window closes on the loop's clock
            while part.statistics().vps[0].staged_updates:  # noqa: ASYNC110  # a counter to poll
                await anyio.sleep(0.001)
        seen.append(f"window commits: {rt.statistics().scheduler.window_commits > 0}")
    return type(asyncio.get_running_loop()).__module__.split(".")[0], seen


def test_the_runtime_on_uvloop_answers_as_on_asyncio() -> None:
    """Run on uvloop (anyio's use_uvloop), the transcript equals the one on asyncio's loop."""
    on_uvloop = anyio.run(_transcript, backend="asyncio", backend_options={"use_uvloop": True})
    on_asyncio = anyio.run(_transcript, backend="asyncio")
    assert on_uvloop[0] == "uvloop"
    assert on_asyncio[0] == "asyncio"
    assert on_uvloop[1] == on_asyncio[1]
    assert on_uvloop[1][-1] == "window commits: True"
