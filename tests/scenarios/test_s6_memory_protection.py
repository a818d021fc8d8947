"""DOMAIN 6, S6: VTL memory protections (HvCallModifyVtlProtectionMask) and GPA intercepts.

DOMAIN 3.4 (protections are enabled through VsmPartitionConfig), 3.6 (the hypercall's checks,
all-or-nothing application, flag validation with and without MBEC) and 2.5 (the GPA intercept
message). Protections describe what VTL0 may do with a page; a VTL0 access they refuse becomes a
GPA intercept to VTL1's SINT0 and VTL1 is entered (reason 2); a refused read returns no data.
The partition has an MMIO range (GPNs 0x100-0x10F) to exercise the "not RAM" refusal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import pytest

from protocol import (
    AccessKind,
    ClearMessageSlot,
    Completed,
    EnableVpVtl,
    HvRegisterName as Reg,
    HvStatus,
    InterceptDropped,
    Intercepted,
    InterceptMessage,
    MemoryAccess,
    ModifyVtlProtectionMask,
    StartVirtualProcessor,
    Vtl,
)
from tests.guest import checked_runtime, long_mode_context, new_partition
from tests.scenarios._bringup import enter_vtl1, ok, status
from tests.scenarios._secure import enable_synic, regs, return_to_vtl0, s1_setup, set_regs

if TYPE_CHECKING:
    from runtime import Partition, Runtime, Vp

pytestmark = pytest.mark.parametrize("commit_policy", ["batched", "eager"])

MMIO: Final = (0x100, 0x10F)
RAM_PAGES: Final = 0x1000
PAGES: Final = [0x200, 0x201, 0x202]
OTHER_PAGE: Final = 0x300
_R, _W, _KX, _UX = 0x1, 0x2, 0x4, 0x8
_GPA_INTERCEPT: Final = 0x8000_0001


async def _partition(rt: Runtime, commit_policy: str) -> Partition:
    """A 4-VP partition of RAM_PAGES pages with one MMIO range."""
    return await new_partition(rt, commit_policy=commit_policy, ram_pages=RAM_PAGES, mmio_gpns=[MMIO])


async def _protected_vp(part: Partition, *, mbec: bool = True) -> Vp:
    """S1 steps 1-7 (protections on, RWX default) and VTL1's SynIC; VP 0 left in VTL1."""
    vp = await s1_setup(part, mbec=mbec)
    await enable_synic(vp)
    return vp


def _protect(
    gpns: list[int], flags: int, *, target_vtl: int | None = None, rep_start: int = 0
) -> ModifyVtlProtectionMask:
    return ModifyVtlProtectionMask(gpns=gpns, map_flags=flags, target_vtl=target_vtl, rep_start=rep_start)


async def _gpa_message(vp: Vp, gpa: int, kind: AccessKind) -> InterceptMessage:
    """The GPA intercept a VTL0 access of ``kind`` at ``gpa`` must produce (DOMAIN 2.5)."""
    state = await regs(vp, Vtl.VTL0, Reg.RIP, Reg.RFLAGS)
    return InterceptMessage(
        message_type=_GPA_INTERCEPT,
        vp_index=vp.index,
        instruction_length=0,
        access_type=int(kind),
        rip=state[Reg.RIP],
        rflags=state[Reg.RFLAGS],
        execution_state=0,
        gpa=gpa,
    )


async def _refused(vp: Vp, gpa: int, kind: AccessKind) -> InterceptMessage:
    """A VTL0 access VTL1's protections refuse: GPA intercept in VTL1's SINT0, VTL1 entered."""
    assert vp.active_vtl == Vtl.VTL0
    rip = await regs(vp, Vtl.VTL0, Reg.RIP)
    message = await _gpa_message(vp, gpa, kind)
    out = await vp.execute(MemoryAccess(gpa=gpa, kind=kind))
    # A refused read returns no data: an intercept, never a Completed carrying a value.
    assert out == Intercepted(message=message)
    assert vp.active_vtl == Vtl.VTL1
    assert await vp.sint0_message(Vtl.VTL1) == message
    assert await regs(vp, Vtl.VTL0, Reg.RIP) == rip  # VTL0 does not advance
    return message


async def _next_access(vp: Vp) -> None:
    """VTL1 frees its SINT0 slot and returns to VTL0 for the next probe.

    DOMAIN 7.3: writing HvMessageTypeNone into the slot's header frees it (EOM does not).
    """
    assert await vp.execute(ClearMessageSlot()) == Completed()
    await return_to_vtl0(vp)


async def test_modify_before_enabling_protections_is_denied(commit_policy: str) -> None:
    """Before VsmPartitionConfig enables protections: AccessDenied (target VTL1 or default)."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await _partition(rt, commit_policy))
        for target in (None, Vtl.VTL1):
            out = await vp.execute(_protect(PAGES, 0, target_vtl=target))
            assert out == status(HvStatus.ACCESS_DENIED)
        assert await set_regs(vp, (Reg.VSM_PARTITION_CONFIG, 0x1F)) == ok(1)
        assert await vp.execute(_protect(PAGES, 0, target_vtl=Vtl.VTL1)) == ok(len(PAGES))


async def test_no_access_pages_intercept_vtl0_writes(commit_policy: str) -> None:
    """Flags 0 on N pages: Success, N reps; a VTL0 write is a GPA intercept {0x80000001, gpa, WRITE}."""
    async with checked_runtime() as rt:
        vp = await _protected_vp(await _partition(rt, commit_policy))
        assert await vp.execute(_protect(PAGES, 0)) == ok(len(PAGES))
        await return_to_vtl0(vp)
        gpa = PAGES[1] << 12 | 0x123
        message = await _refused(vp, gpa, AccessKind.WRITE)
        assert message.message_type == _GPA_INTERCEPT
        assert message.gpa == gpa
        assert message.access_type == AccessKind.WRITE


@pytest.mark.parametrize("kind", list(AccessKind))
async def test_protected_access_of_every_kind_is_intercepted(commit_policy: str, kind: AccessKind) -> None:
    """Read, write and execute of a no-access page: intercepted (a read returns no data)."""
    async with checked_runtime() as rt:
        vp = await _protected_vp(await _partition(rt, commit_policy))
        assert await vp.execute(_protect(PAGES, 0)) == ok(len(PAGES))
        await return_to_vtl0(vp)
        for gpn in PAGES:
            message = await _refused(vp, gpn << 12, kind)
            assert message.access_type == kind
            await _next_access(vp)


async def test_unprotected_pages_and_vtl1_accesses_complete(commit_policy: str) -> None:
    """Other pages, MMIO pages and VTL1's own accesses to protected pages all complete."""
    async with checked_runtime() as rt:
        vp = await _protected_vp(await _partition(rt, commit_policy))
        assert await vp.execute(_protect(PAGES, 0)) == ok(len(PAGES))
        for kind in AccessKind:
            assert await vp.execute(MemoryAccess(gpa=PAGES[0] << 12, kind=kind)) == Completed()
        await return_to_vtl0(vp)
        for kind in AccessKind:
            for gpn in (OTHER_PAGE, MMIO[0], MMIO[1], PAGES[-1] + 1):
                assert await vp.execute(MemoryAccess(gpa=gpn << 12, kind=kind)) == Completed()
        assert vp.active_vtl == Vtl.VTL0
        assert await vp.sint0_message(Vtl.VTL1) is None


async def test_read_only_page(commit_policy: str) -> None:
    """Flags R: reads complete, writes and execution are intercepted."""
    async with checked_runtime() as rt:
        vp = await _protected_vp(await _partition(rt, commit_policy))
        assert await vp.execute(_protect([PAGES[0]], _R)) == ok(1)
        await return_to_vtl0(vp)
        gpa = PAGES[0] << 12
        assert await vp.execute(MemoryAccess(gpa=gpa, kind=AccessKind.READ)) == Completed()
        await _refused(vp, gpa, AccessKind.WRITE)
        await _next_access(vp)
        await _refused(vp, gpa, AccessKind.EXECUTE)


async def test_restoring_the_default_lifts_the_protection(commit_policy: str) -> None:
    """Flags 0xF (the default mask) on a protected page make it accessible again."""
    async with checked_runtime() as rt:
        vp = await _protected_vp(await _partition(rt, commit_policy))
        assert await vp.execute(_protect(PAGES, 0)) == ok(len(PAGES))
        assert await vp.execute(_protect(PAGES[:1], 0xF)) == ok(1)
        await return_to_vtl0(vp)
        assert await vp.execute(MemoryAccess(gpa=PAGES[0] << 12, kind=AccessKind.WRITE)) == Completed()
        await _refused(vp, PAGES[1] << 12, AccessKind.WRITE)


async def test_target_vtl0_is_invalid_parameter(commit_policy: str) -> None:
    """VTL1 naming target VTL0: InvalidParameter, 0 reps (protections are set as VTL1's)."""
    async with checked_runtime() as rt:
        vp = await _protected_vp(await _partition(rt, commit_policy))
        assert await vp.execute(_protect(PAGES, 0, target_vtl=Vtl.VTL0)) == status(HvStatus.INVALID_PARAMETER)
        await return_to_vtl0(vp)
        for gpn in PAGES:
            assert await vp.execute(MemoryAccess(gpa=gpn << 12, kind=AccessKind.WRITE)) == Completed()


async def test_vtl0_cannot_modify_protections(commit_policy: str) -> None:
    """From VTL0: default target (VTL0) -> InvalidParameter, target VTL1 -> AccessDenied."""
    async with checked_runtime() as rt:
        vp = await _protected_vp(await _partition(rt, commit_policy))
        await return_to_vtl0(vp)
        assert await vp.execute(_protect(PAGES, 0)) == status(HvStatus.INVALID_PARAMETER)
        assert await vp.execute(_protect(PAGES, 0, target_vtl=Vtl.VTL1)) == status(HvStatus.ACCESS_DENIED)
        assert await vp.execute(MemoryAccess(gpa=PAGES[0] << 12, kind=AccessKind.WRITE)) == Completed()


@pytest.mark.parametrize("mbec", [False, True], ids=["no-mbec", "mbec"])
@pytest.mark.parametrize(
    ("flags", "valid_without_mbec", "valid_with_mbec"),
    [
        pytest.param(_R | _KX, False, False, id="R|KX=0x5"),
        pytest.param(_R | _W | _KX, False, False, id="RW|KX=0x7"),
        pytest.param(_R | _UX, False, True, id="R|UX=0x9"),
        pytest.param(_R | _W | _UX, False, True, id="RW|UX=0xB"),
        pytest.param(_R | _KX | _UX, True, True, id="R|KX|UX=0xD"),
        pytest.param(_R | _W | _KX | _UX, True, True, id="RWX=0xF"),
        pytest.param(_R | _W, True, True, id="RW=0x3"),
        pytest.param(_KX | _UX, False, False, id="X-without-R=0xC"),
        pytest.param(_W, False, False, id="W-without-R=0x2"),
        pytest.param(0x8000 | _R, False, False, id="adjustable"),
    ],
)
async def test_execute_flags_with_and_without_mbec(
    commit_policy: str, mbec: bool, flags: int, valid_without_mbec: bool, valid_with_mbec: bool
) -> None:
    """KX and UX may differ only with MBEC, and only as UX without KX; others refused, 0 reps."""
    async with checked_runtime() as rt:
        vp = await _protected_vp(await _partition(rt, commit_policy), mbec=mbec)
        valid = valid_with_mbec if mbec else valid_without_mbec
        want = ok(len(PAGES)) if valid else status(HvStatus.INVALID_REGISTER_VALUE)
        assert await vp.execute(_protect(PAGES, flags)) == want
        await return_to_vtl0(vp)
        # Kernel-mode (CPL 0) VTL0 execution follows KX; a refused flag set changed nothing.
        gpa = PAGES[0] << 12
        if valid and not flags & _KX:
            await _refused(vp, gpa, AccessKind.EXECUTE)
        else:
            assert await vp.execute(MemoryAccess(gpa=gpa, kind=AccessKind.EXECUTE)) == Completed()


async def test_user_execute_follows_ux_with_mbec(commit_policy: str) -> None:
    """With MBEC and flags RW|UX: CPL 3 execution completes, CPL 0 execution is intercepted."""
    async with checked_runtime() as rt:
        part = await _partition(rt, commit_policy)
        vp0 = await _protected_vp(part)
        assert await vp0.execute(_protect(PAGES, _R | _W | _UX)) == ok(len(PAGES))
        # VTL1 brings VP 1 up: VTL1 enabled there, VTL0 started at CPL 3 (user stack segment).
        ctx1 = long_mode_context(0x20_0000)
        assert await vp0.execute(EnableVpVtl(vp_index=1, target_vtl=Vtl.VTL1, context=ctx1)) == ok()
        user = long_mode_context(0x40_0000, user=True)
        assert await vp0.execute(StartVirtualProcessor(vp_index=1, target_vtl=Vtl.VTL0, context=user)) == ok()
        vp1 = part.vp(1)
        assert await regs(vp1, Vtl.VTL0, Reg.RIP) == {Reg.RIP: 0x40_0000}  # applies the start
        assert vp1.active_vtl == Vtl.VTL1  # VTL1 runs first where it is enabled
        await enable_synic(vp1)
        await return_to_vtl0(vp1)
        gpa = PAGES[0] << 12
        assert await vp1.execute(MemoryAccess(gpa=gpa, kind=AccessKind.EXECUTE)) == Completed()
        assert await vp1.execute(MemoryAccess(gpa=gpa, kind=AccessKind.WRITE)) == Completed()
        await return_to_vtl0(vp0)
        message = await _refused(vp0, gpa, AccessKind.EXECUTE)
        assert message.vp_index == 0
        assert vp1.active_vtl == Vtl.VTL0  # VP 1 is not disturbed


async def test_all_or_nothing_with_an_mmio_page(commit_policy: str) -> None:
    """A list with an MMIO GPN: OperationDenied, 0 reps, and the page listed before it is unchanged."""
    async with checked_runtime() as rt:
        vp = await _protected_vp(await _partition(rt, commit_policy))
        gpns = [PAGES[0], PAGES[1], MMIO[0] + 3, PAGES[2]]
        assert await vp.execute(_protect(gpns, 0)) == status(HvStatus.OPERATION_DENIED)
        beyond = [PAGES[0], RAM_PAGES]  # a GPN past the end of RAM is refused the same way
        assert await vp.execute(_protect(beyond, 0)) == status(HvStatus.OPERATION_DENIED)
        await return_to_vtl0(vp)
        for gpn in PAGES:
            for kind in AccessKind:
                assert await vp.execute(MemoryAccess(gpa=gpn << 12, kind=kind)) == Completed()
        assert vp.active_vtl == Vtl.VTL0


async def test_rep_start_skips_the_listed_prefix(commit_policy: str) -> None:
    """rep_start=1: only the pages from index 1 change; reps completed = rep count."""
    async with checked_runtime() as rt:
        vp = await _protected_vp(await _partition(rt, commit_policy))
        assert await vp.execute(_protect(PAGES, 0, rep_start=1)) == ok(len(PAGES))
        await return_to_vtl0(vp)
        assert await vp.execute(MemoryAccess(gpa=PAGES[0] << 12, kind=AccessKind.WRITE)) == Completed()
        await _refused(vp, PAGES[1] << 12, AccessKind.WRITE)


async def test_dropped_without_vtl1_synic(commit_policy: str) -> None:
    """Protections on but VTL1's SINT0 still masked (reset state): the GPA intercept is dropped."""
    async with checked_runtime() as rt:
        vp = await s1_setup(await _partition(rt, commit_policy))
        assert await vp.execute(_protect(PAGES, 0)) == ok(len(PAGES))
        await return_to_vtl0(vp)
        out = await vp.execute(MemoryAccess(gpa=PAGES[0] << 12, kind=AccessKind.READ))
        assert isinstance(out, InterceptDropped)
        assert out.message == await _gpa_message(vp, PAGES[0] << 12, AccessKind.READ)
        assert vp.active_vtl == Vtl.VTL0
        assert await vp.sint0_message(Vtl.VTL1) is None
