"""RELIABILITY B5: while VTL1 is active on a VP, nothing runs there as VTL0.

The caller VTL is never a parameter (API.md): an action runs in whatever VTL is active when the
VP takes it from its mailbox. So a crowd of tasks calling ``vp.execute`` concurrently while VTL1
is active all run as VTL1 (VsmVpStatus reports ActiveVtl = 1, RDMSR reads VTL1's LSTAR, WRMSR
writes it, and VTL0's registers do not move) until a VtlReturn; after it they run as VTL0. VTL1
on one VP holds nothing else up: other VPs of the partition and other partitions go on.

Not modelled, so not tested here: VTL0-targeted interrupts pending until return, and INIT/SIPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import anyio

from protocol import (
    Completed,
    GetVpRegisters,
    HvRegisterName as Reg,
    HypercallResult,
    Rdmsr,
    RegisterAssoc,
    SetVpRegisters,
    StartVirtualProcessor,
    Vtl,
    VtlReturn,
    VtlSwitched,
    Wrmsr,
)
from protocol._x86 import Msr
from tests.guest import checked_runtime, long_mode_context, new_partition
from tests.scenarios._bringup import enter_vtl1, ok

if TYPE_CHECKING:
    from runtime import Vp

TASKS: Final = 8
ROUNDS: Final = 6
VTL0_LSTAR: Final = 0xFFFF_8000_0000_0000
VTL1_LSTAR: Final = 0xFFFF_9000_0000_0000
STATUS: Final = GetVpRegisters(names=[Reg.VSM_VP_STATUS])


async def _active_vtl_reported(vp: Vp) -> int:
    """The ActiveVtl field (bits 0-3) of VsmVpStatus as read by whoever runs on ``vp`` now."""
    out = await vp.execute(STATUS)
    assert isinstance(out, HypercallResult)
    assert out.status == 0, out
    return out.values[0] & 0xF


async def _lstar_seen(vp: Vp) -> int:
    out = await vp.execute(Rdmsr(msr=Msr.LSTAR))
    assert isinstance(out, Completed)
    assert out.value is not None
    return out.value


async def _crowd(vp: Vp) -> tuple[list[int], list[int]]:
    """TASKS tasks each run ROUNDS of (VsmVpStatus, RDMSR LSTAR) concurrently on ``vp``."""
    vtls: list[int] = []
    lstars: list[int] = []

    async def worker() -> None:
        for _ in range(ROUNDS):
            vtls.append(await _active_vtl_reported(vp))
            lstars.append(await _lstar_seen(vp))

    async with anyio.create_task_group() as tg:
        for _ in range(TASKS):
            tg.start_soon(worker)
    assert len(vtls) == len(lstars) == TASKS * ROUNDS
    return vtls, lstars


async def _vp0_in_vtl1_with_distinct_lstars(vp: Vp) -> None:
    """VTL1 gives VTL0 and itself different LSTARs, so a read shows whose registers it used."""
    out = await vp.execute(
        SetVpRegisters(registers=[RegisterAssoc(name=Reg.LSTAR, value=VTL0_LSTAR)], target_vtl=Vtl.VTL0)
    )
    assert out == ok(1)
    assert await vp.execute(Wrmsr(msr=Msr.LSTAR, value=VTL1_LSTAR)) == Completed()


async def test_concurrent_actions_run_in_the_active_vtl() -> None:
    """Concurrent actions while VTL1 is active all run as VTL1; after VtlReturn all run as VTL0."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp = await enter_vtl1(part)
        await _vp0_in_vtl1_with_distinct_lstars(vp)
        vtl0_before = await vp.registers(Vtl.VTL0, [Reg.RIP, Reg.LSTAR, Reg.CR0, Reg.EFER])

        vtls, lstars = await _crowd(vp)
        assert set(vtls) == {1}
        assert set(lstars) == {VTL1_LSTAR}
        assert vp.active_vtl == Vtl.VTL1
        # Nothing ran in VTL0: not one instruction advanced its RIP.
        assert await vp.registers(Vtl.VTL0, [Reg.RIP, Reg.LSTAR, Reg.CR0, Reg.EFER]) == vtl0_before

        # Concurrent WRMSRs while VTL1 is active land in VTL1's LSTAR, never VTL0's.
        async with anyio.create_task_group() as tg:
            for i in range(TASKS):
                tg.start_soon(vp.execute, Wrmsr(msr=Msr.LSTAR, value=VTL1_LSTAR + i))
        assert (await vp.registers(Vtl.VTL1, [Reg.LSTAR]))[Reg.LSTAR] in range(VTL1_LSTAR, VTL1_LSTAR + TASKS)
        assert (await vp.registers(Vtl.VTL0, [Reg.LSTAR]))[Reg.LSTAR] == VTL0_LSTAR

        assert isinstance(await vp.execute(VtlReturn(fast=True)), VtlSwitched)
        vtls, lstars = await _crowd(vp)
        assert set(vtls) == {0}
        assert set(lstars) == {VTL0_LSTAR}
        assert vp.active_vtl == Vtl.VTL0


async def test_a_return_amid_concurrent_actions_splits_them_cleanly() -> None:
    """With a VtlReturn among concurrent actions, each action ran wholly in the VTL it reported."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp = await enter_vtl1(part)
        rip0 = (await vp.registers(Vtl.VTL0, [Reg.RIP]))[Reg.RIP]
        rip1 = (await vp.registers(Vtl.VTL1, [Reg.RIP]))[Reg.RIP]
        reported: list[int] = []

        async def worker() -> None:
            for _ in range(ROUNDS):
                vtl = await _active_vtl_reported(vp)
                reported.append(vtl)

        async def returner() -> None:
            for _ in range(ROUNDS // 2):
                await anyio.lowlevel.checkpoint()
            assert isinstance(await vp.execute(VtlReturn(fast=True)), VtlSwitched)

        async with anyio.create_task_group() as tg:
            for _ in range(TASKS):
                tg.start_soon(worker)
            tg.start_soon(returner)
        in_vtl1, in_vtl0 = reported.count(1), reported.count(0)
        # Every worker posts its first action before the returner (which first yields a few
        # times) posts the return, and no worker gets through all its rounds in that time.
        assert in_vtl1 >= TASKS
        assert in_vtl0 > 0
        assert in_vtl1 + in_vtl0 == TASKS * ROUNDS
        assert vp.active_vtl == Vtl.VTL0
        # Every hypercall advanced the RIP of the VTL it reported, by 3; the return VTL1's.
        assert (await vp.registers(Vtl.VTL1, [Reg.RIP]))[Reg.RIP] == rip1 + 3 * (in_vtl1 + 1)
        assert (await vp.registers(Vtl.VTL0, [Reg.RIP]))[Reg.RIP] == rip0 + 3 * in_vtl0


async def test_other_vps_and_partitions_proceed_while_vtl1_is_active() -> None:
    """VTL1 busy on VP 0 holds up neither VP 1 of its partition nor another partition's VP."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        other = await new_partition(rt, vp_count=2)
        vp0 = await enter_vtl1(part)
        out = await vp0.execute(
            StartVirtualProcessor(vp_index=1, target_vtl=Vtl.VTL0, context=long_mode_context(0x6000))
        )
        assert out == ok()
        await _vp0_in_vtl1_with_distinct_lstars(vp0)
        vp1, far = part.vp(1), other.vp(0)
        vtl0_before = await vp0.registers(Vtl.VTL0, [Reg.RIP, Reg.LSTAR])
        rips = {vp: (await vp.registers(Vtl.VTL0, [Reg.RIP]))[Reg.RIP] for vp in (vp1, far)}
        others_done = anyio.Event()
        vtl1_steps = 0
        seen: dict[Vp, list[int]] = {vp1: [], far: []}

        async def vtl1_keeps_vp0_busy() -> None:
            nonlocal vtl1_steps
            while not others_done.is_set():
                assert await _active_vtl_reported(vp0) == 1
                assert await _lstar_seen(vp0) == VTL1_LSTAR
                vtl1_steps += 1

        async def elsewhere(vp: Vp) -> None:
            for _ in range(ROUNDS):
                seen[vp].append(await _active_vtl_reported(vp))

        with anyio.fail_after(10):  # a VP blocked behind VP 0's VTL1 would hang here
            async with anyio.create_task_group() as tg:
                tg.start_soon(vtl1_keeps_vp0_busy)
                async with anyio.create_task_group() as others:
                    for vp in (vp1, far):
                        for _ in range(TASKS // 2):
                            others.start_soon(elsewhere, vp)
                others_done.set()

        assert vtl1_steps >= 1
        for vp in (vp1, far):
            assert seen[vp] == [0] * (ROUNDS * (TASKS // 2))
            expected = rips[vp] + 3 * ROUNDS * (TASKS // 2)
            assert (await vp.registers(Vtl.VTL0, [Reg.RIP]))[Reg.RIP] == expected
            assert vp.active_vtl == Vtl.VTL0
        assert vp0.active_vtl == Vtl.VTL1
        assert await vp0.registers(Vtl.VTL0, [Reg.RIP, Reg.LSTAR]) == vtl0_before
