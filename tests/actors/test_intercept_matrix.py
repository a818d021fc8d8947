"""RELIABILITY B6: the secure-intercept matrix of CrInterceptControl (DOMAIN 2.4, 3.8, 5 items 4-6, 11).

For each of the 22 bits OpenHCL CVMs support (0x1EFF_D557) the VTL0 instruction the bit guards is
run with the bit armed, with nothing armed, and with every other bit armed: armed gives
``Intercepted`` with the right message, the write is not applied and VTL0's RIP does not move
(invariant 11); otherwise the instruction completes and its write lands. Then the CR0/CR4 mask
rules (PR #2275's "control bit AND masked change", Appendix B item 8's stale VMCS masks), the
refused bits, VTL1's own writes, the PL3_SSP / INTERRUPT_SSP_TABLE_ADDR quirk (Appendix B item 13)
and the derived VMCS state each registration produces.

Everything runs through the public runtime API, under both commit policies. VTL0 runs in 32-bit
protected mode with CR4.PAE|OSXSAVE (XSETBV needs OSXSAVE) at CPL 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import pytest

from actors import PartitionFailed
from protocol import (
    Action,
    ClearMessageSlot,
    Completed,
    CrInterceptControl,
    ExceptionInjected,
    GetVpRegisters,
    HvRegisterName as Reg,
    HvStatus,
    Intercepted,
    InterceptMessage,
    LoadTableRegister,
    MovToCr,
    Rdmsr,
    StartVirtualProcessor,
    Vtl,
    VtlCall,
    VtlSwitched,
    Wrmsr,
    Xsetbv,
)
from protocol._x86 import (
    APIC_BASE_BSP,
    APIC_BASE_DEFAULT,
    CR0_ET,
    CR0_MP,
    CR0_PE,
    CR0_PG,
    CR0_TS,
    CR4_MCE,
    CR4_OSXSAVE,
    CR4_PAE,
    CR4_PGE,
    CR4_SMEP,
    DEFAULT_CR0_GUEST_HOST_MASK,
    EFER_LME,
    EFER_NXE,
    SECONDARY_CONTROL_DESCRIPTOR_TABLE_EXITING,
    SECONDARY_CONTROL_MODE_BASED_EXECUTE,
    Msr,
    default_cr4_guest_host_mask,
    segment,
    table,
)
from tests.guest import checked_runtime, long_mode_context, new_partition
from tests.scenarios._bringup import enter_vtl1, ok, status
from tests.scenarios._secure import arm, enable_synic, regs, return_to_vtl0, set_regs

if TYPE_CHECKING:
    from runtime import Runtime, Vp

SUPPORTED: Final = CrInterceptControl.SUPPORTED
SUPPORTED_BITS: Final = tuple(b for b in range(64) if SUPPORTED >> b & 1)
UNSUPPORTED_BITS: Final = tuple(b for b in range(64) if not SUPPORTED >> b & 1)
POLICIES: Final = pytest.mark.parametrize("commit_policy", ["batched", "eager"])

VTL0_CR0: Final = CR0_PE | CR0_ET
VTL0_CR4: Final = CR4_PAE | CR4_OSXSAVE
#: Registered with Cr0Write/Cr4Write: TS and PGE are guest-owned, so only the registration makes
#: changing them exit; PG and MCE are host-owned and always exit.
CR0_MASK: Final = CR0_TS | CR0_PG
CR4_MASK: Final = CR4_PGE | CR4_SMEP
DEFAULT_CR4_MASK: Final = default_cr4_guest_host_mask()
MISC_ENABLE_BIT: Final = 4
PLS_SSP_BIT: Final = 27
ISST_BIT: Final = 28
ALL_REGISTERED_MSRS: Final = (
    Msr.PL0_SSP,
    Msr.PL1_SSP,
    Msr.PL2_SSP,
    Msr.PL3_SSP,
    Msr.INTERRUPT_SSP_TABLE_ADDR,
)

_REGISTER_INTERCEPT: Final = 0x8001_0006
_MSR_INTERCEPT: Final = 0x8001_0001


@dataclass(frozen=True)
class Guarded:
    """One CrInterceptControl bit and the VTL0 instruction it guards."""

    bit: int
    label: str
    action: Action
    length: int
    #: Where a completed write lands and the value it leaves there (None: outside the model).
    register: Reg | None
    applied: int = 0
    #: Message payload fields (register_name/value, or msr/rax/rdx).
    payload: dict[str, int] = field(default_factory=dict)

    @property
    def control(self) -> int:
        """The control that arms this case: INTERRUPT_SSP_TABLE_ADDR's bitmap bit follows bit 27."""
        extra = 1 << PLS_SSP_BIT if self.bit == ISST_BIT else 0
        return 1 << self.bit | extra


def _mov_cr(bit: int, cr: int, value: int, name: Reg) -> Guarded:
    return Guarded(
        bit,
        f"mov-cr{cr}",
        MovToCr(cr=cr, value=value),  # type: ignore[arg-type]  # cr is 0 or 4
        3,
        name,
        value,
        {"register_name": name, "value": value},
    )


def _wrmsr(bit: int, msr: Msr, value: int, name: Reg | None) -> Guarded:
    payload = {"msr": int(msr), "rax": value & 0xFFFF_FFFF, "rdx": value >> 32}
    return Guarded(bit, f"wrmsr-{msr.name.lower()}", Wrmsr(msr=msr, value=value), 2, name, value, payload)


def _table(bit: int, which: str, value: int, name: Reg) -> Guarded:
    action = LoadTableRegister(which=which, value=value)  # type: ignore[arg-type]  # a valid name
    # LGDT/LIDT/LLDT/LTR messages carry 0, not the loaded value (DOMAIN 2.5).
    return Guarded(bit, f"load-{which}", action, 3, name, value, {"register_name": name, "value": 0})


#: Every supported bit except Ia32MiscEnableWrite (4), whose MSR writes are dropped (see below).
CASES: Final = (
    _mov_cr(0, 0, VTL0_CR0 | CR0_TS, Reg.CR0),
    _mov_cr(1, 4, VTL0_CR4 | CR4_PGE, Reg.CR4),
    Guarded(2, "xsetbv", Xsetbv(value=0x3), 3, Reg.XFEM, 0x3, {"register_name": Reg.XFEM, "value": 0x3}),
    _wrmsr(6, Msr.LSTAR, 0xFFFF_8000_0000_1000, Reg.LSTAR),
    _wrmsr(8, Msr.STAR, 0x0023_0010_0000_0000, Reg.STAR),
    _wrmsr(10, Msr.CSTAR, 0xFFFF_8000_0000_2000, Reg.CSTAR),
    _wrmsr(12, Msr.APIC_BASE, APIC_BASE_DEFAULT | APIC_BASE_BSP, Reg.APIC_BASE),
    _wrmsr(14, Msr.EFER, EFER_LME | EFER_NXE, Reg.EFER),
    _table(15, "gdtr", table(base=0x5000, limit=0x7F), Reg.GDTR),
    _table(16, "idtr", table(base=0x6000, limit=0xFFF), Reg.IDTR),
    _table(17, "ldtr", segment(base=0x7000, limit=0xFF, selector=0x28, attributes=0x82), Reg.LDTR),
    _table(18, "tr", segment(base=0x8000, limit=0x67, selector=0x30, attributes=0x8B), Reg.TR),
    _wrmsr(19, Msr.SYSENTER_CS, 0x10, Reg.SYSENTER_CS),
    _wrmsr(20, Msr.SYSENTER_EIP, 0xFFFF_8000_0000_3000, Reg.SYSENTER_EIP),
    _wrmsr(21, Msr.SYSENTER_ESP, 0xFFFF_8000_0000_4000, Reg.SYSENTER_ESP),
    _wrmsr(22, Msr.SFMASK, 0x4700, Reg.SFMASK),
    _wrmsr(23, Msr.TSC_AUX, 0x7, Reg.TSC_AUX),
    _wrmsr(25, Msr.XSS, 0x800, Reg.XSS),
    # S_CET and the SSP MSRs pass straight to the hardware when not registered: outside the model.
    _wrmsr(26, Msr.S_CET, 0x4, None),
    _wrmsr(27, Msr.PL0_SSP, 0xFFFF_8000_0000_5000, None),
    _wrmsr(27, Msr.PL1_SSP, 0xFFFF_8000_0000_6000, None),
    _wrmsr(27, Msr.PL2_SSP, 0xFFFF_8000_0000_7000, None),
    _wrmsr(28, Msr.INTERRUPT_SSP_TABLE_ADDR, 0xFFFF_8000_0000_8000, None),
)
CASE_IDS: Final = [f"bit{case.bit}-{case.label}" for case in CASES]


def test_cases_cover_every_supported_bit() -> None:
    """The matrix has a case for each supported bit but 4 (MISC_ENABLE, tested on its own)."""
    assert len(SUPPORTED_BITS) == 22
    assert {case.bit for case in CASES} | {MISC_ENABLE_BIT} == set(SUPPORTED_BITS)


async def _vtl0_ready(rt: Runtime, commit_policy: str, control: int, *, vp_count: int = 4) -> Vp:
    """VP 0: VTL1 enabled with its SynIC, VTL0 in protected mode, ``control`` armed; back in VTL0."""
    vp = await enter_vtl1(await new_partition(rt, commit_policy=commit_policy, vp_count=vp_count))
    await enable_synic(vp)
    assert await set_regs(vp, (Reg.CR0, VTL0_CR0), (Reg.CR4, VTL0_CR4), target_vtl=Vtl.VTL0) == ok(2)
    await arm(vp, control, cr0_mask=CR0_MASK, cr4_mask=CR4_MASK)
    await return_to_vtl0(vp)
    return vp


async def _intercepted(vp: Vp, case: Guarded) -> None:
    """``case.action`` is intercepted: message in VTL1's SINT0, write not applied, RIP unchanged."""
    names = [Reg.RIP, Reg.RFLAGS] + ([case.register] if case.register is not None else [])
    before = await regs(vp, Vtl.VTL0, *names)
    message = InterceptMessage(
        message_type=_MSR_INTERCEPT if "msr" in case.payload else _REGISTER_INTERCEPT,
        vp_index=0,
        instruction_length=case.length,
        access_type=1,
        rip=before[Reg.RIP],
        rflags=before[Reg.RFLAGS],
        execution_state=0,
        **case.payload,
    )
    assert await vp.execute(case.action) == Intercepted(message=message)
    assert vp.active_vtl == Vtl.VTL1
    assert await vp.sint0_message(Vtl.VTL1) == message
    assert await regs(vp, Vtl.VTL0, *names) == before
    if case.register is not None:
        assert before[case.register] != case.applied or case.register == Reg.APIC_BASE


_SELECTOR: Final = 0xFFFF << 96


async def _completed(vp: Vp, case: Guarded) -> None:
    """``case.action`` completes in VTL0 without an intercept; the write lands, RIP advances.

    An LLDT/LTR that exits (descriptor-table exiting on) is emulated by TDX
    ``emulate_ldtr_or_tr``, which writes only the selector; without the exit the processor
    loads the whole register.
    """
    rip = (await regs(vp, Vtl.VTL0, Reg.RIP))[Reg.RIP]
    applied = case.applied
    if case.register in (Reg.LDTR, Reg.TR) and (await vp.tdx_state(Vtl.VTL0)).secondary_controls & 0x4:
        old = (await regs(vp, Vtl.VTL0, case.register))[case.register]
        applied = (old & ~_SELECTOR) | (applied & _SELECTOR)
    assert await vp.execute(case.action) == Completed()
    assert vp.active_vtl == Vtl.VTL0
    assert await vp.sint0_message(Vtl.VTL1) is None
    assert await regs(vp, Vtl.VTL0, Reg.RIP) == {Reg.RIP: rip + case.length}
    if case.register is not None:
        assert await regs(vp, Vtl.VTL0, case.register) == {case.register: applied}


@POLICIES
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
async def test_armed_write_is_intercepted_and_not_applied(commit_policy: str, case: Guarded) -> None:
    """Bit armed: the guarded VTL0 write is intercepted with its message; not applied, RIP unchanged."""
    async with checked_runtime() as rt:
        vp = await _vtl0_ready(rt, commit_policy, case.control)
        await _intercepted(vp, case)


@POLICIES
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
async def test_unarmed_write_completes(commit_policy: str, case: Guarded) -> None:
    """Nothing armed (masks set all the same): the guarded VTL0 write completes and lands."""
    async with checked_runtime() as rt:
        vp = await _vtl0_ready(rt, commit_policy, 0)
        await _completed(vp, case)


@POLICIES
@pytest.mark.parametrize(
    "case", [c for c in CASES if c.bit != ISST_BIT], ids=lambda c: f"bit{c.bit}-{c.label}"
)
async def test_only_its_own_bit_intercepts(commit_policy: str, case: Guarded) -> None:
    """Every other supported bit armed, this one not: no intercept (bit 28 excluded: see the quirk tests)."""
    async with checked_runtime() as rt:
        vp = await _vtl0_ready(rt, commit_policy, SUPPORTED & ~(1 << case.bit))
        await _completed(vp, case)


@POLICIES
async def test_misc_enable_write_is_dropped_even_when_armed(commit_policy: str) -> None:
    """Ia32MiscEnableWrite armed: WRMSR MISC_ENABLE still completes (dropped), no intercept.

    DOMAIN 3.8 lists no MISC_ENABLE forwarding and says the mask is stored only for read-back;
    OpenHCL's ``cvm_try_protect_msr_write`` says "writes to X86X_IA32_MSR_MISC_ENABLE are
    dropped, so don't need to check the mask". RELIABILITY B6's "MiscEnable bits" therefore have
    nothing to intercept: the bit is accepted, stored and read back, and guards nothing.
    """
    async with checked_runtime() as rt:
        vp = await _vtl0_ready(rt, commit_policy, 0)
        await return_to_vtl1_with_call(vp)
        out = await set_regs(
            vp, (Reg.CR_INTERCEPT_IA32_MISC_ENABLE_MASK, 0x1), (Reg.CR_INTERCEPT_CONTROL, 0x10)
        )
        assert out == ok(2)
        names = [Reg.CR_INTERCEPT_CONTROL, Reg.CR_INTERCEPT_IA32_MISC_ENABLE_MASK]
        assert await vp.execute(GetVpRegisters(names=names)) == ok(2, [0x10, 0x1])
        await return_to_vtl0(vp)
        rip = (await regs(vp, Vtl.VTL0, Reg.RIP))[Reg.RIP]
        assert await vp.execute(Wrmsr(msr=Msr.MISC_ENABLE, value=0x1)) == Completed()
        assert vp.active_vtl == Vtl.VTL0
        assert await vp.sint0_message(Vtl.VTL1) is None
        assert await vp.execute(Rdmsr(msr=Msr.MISC_ENABLE)) == Completed(value=0)
        assert await regs(vp, Vtl.VTL0, Reg.RIP) == {Reg.RIP: rip + 4}


async def return_to_vtl1_with_call(vp: Vp) -> None:
    """VTL0 calls VTL1 (VtlCall, entry reason 1)."""
    assert await vp.execute(VtlCall()) == VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)


# ---- CR0/CR4 masks --------------------------------------------------------------------------------


@POLICIES
async def test_cr0_change_outside_the_mask_is_not_intercepted(commit_policy: str) -> None:
    """PR #2275: Cr0Write armed but the change misses Cr0Mask (PE: exits, MP: no exit) -> completes."""
    async with checked_runtime() as rt:
        vp = await _vtl0_ready(rt, commit_policy, 0x1)
        for value in (VTL0_CR0 | CR0_MP, CR0_ET | CR0_MP, VTL0_CR0):
            await _completed(vp, _mov_cr(0, 0, value, Reg.CR0))
        await _intercepted(vp, _mov_cr(0, 0, VTL0_CR0 | CR0_PG, Reg.CR0))


@POLICIES
async def test_cr4_change_inside_and_outside_the_mask(commit_policy: str) -> None:
    """Cr4Write with Cr4Mask=PGE|SMEP: SMEP or PGE changes intercepted; MCE (host-owned) and PSE complete."""
    async with checked_runtime() as rt:
        vp = await _vtl0_ready(rt, commit_policy, 0x2)
        await _completed(vp, _mov_cr(1, 4, VTL0_CR4 | CR4_MCE, Reg.CR4))
        await _completed(vp, _mov_cr(1, 4, VTL0_CR4 | CR4_MCE | 0x10, Reg.CR4))
        current = VTL0_CR4 | CR4_MCE | 0x10
        await _intercepted(vp, _mov_cr(1, 4, current | CR4_SMEP, Reg.CR4))
        await return_to_vtl0_after_eom(vp)
        await _intercepted(vp, _mov_cr(1, 4, current | CR4_PGE | CR4_SMEP, Reg.CR4))


async def return_to_vtl0_after_eom(vp: Vp) -> None:
    """VTL1 frees its SINT0 slot and returns without emulating (VTL0 retries).

    DOMAIN 7.3: EOM does not free the slot (HV1 ``set_eom`` does nothing); writing
    HvMessageTypeNone into the header does. EOM is still written, as a guest may.
    """
    assert await set_regs(vp, (Reg.EOM, 0)) == ok(1)
    assert await vp.execute(ClearMessageSlot()) == Completed()
    await return_to_vtl0(vp)


@POLICIES
async def test_masks_without_their_control_bits_do_nothing(commit_policy: str) -> None:
    """Masks written, control armed for other things only: CR0.PG and CR4.SMEP changes complete."""
    async with checked_runtime() as rt:
        vp = await _vtl0_ready(rt, commit_policy, SUPPORTED & ~0x3)
        state = await vp.tdx_state(Vtl.VTL0)
        assert state.cr0_guest_host_mask == DEFAULT_CR0_GUEST_HOST_MASK
        assert state.cr4_guest_host_mask == DEFAULT_CR4_MASK
        await _completed(vp, _mov_cr(0, 0, VTL0_CR0 | CR0_PG, Reg.CR0))
        await _completed(vp, _mov_cr(1, 4, VTL0_CR4 | CR4_SMEP, Reg.CR4))


@POLICIES
@pytest.mark.parametrize(
    ("control", "name", "cr", "base", "late_bit", "default"),
    [
        pytest.param(
            0x1, Reg.CR_INTERCEPT_CR0_MASK, 0, VTL0_CR0, CR0_MP, DEFAULT_CR0_GUEST_HOST_MASK, id="cr0"
        ),
        pytest.param(0x2, Reg.CR_INTERCEPT_CR4_MASK, 4, VTL0_CR4, 0x10, DEFAULT_CR4_MASK, id="cr4"),
    ],
)
async def test_mask_written_after_the_control_needs_a_new_control_write(
    commit_policy: str, control: int, name: Reg, cr: int, base: int, late_bit: int, default: int
) -> None:
    """Appendix B item 8: a guest-owned mask bit added later exits only once the control is rewritten."""
    async with checked_runtime() as rt:
        vp = await _vtl0_ready(rt, commit_policy, control)
        first = CR0_MASK if cr == 0 else CR4_MASK
        field = "cr0_guest_host_mask" if cr == 0 else "cr4_guest_host_mask"
        reg_name = Reg.CR0 if cr == 0 else Reg.CR4
        bit = control.bit_length() - 1
        await return_to_vtl1_with_call(vp)
        assert await set_regs(vp, (name, first | late_bit)) == ok(1)
        assert getattr(await vp.tdx_state(Vtl.VTL0), field) == default | first  # not refreshed
        await return_to_vtl0(vp)
        await _completed(vp, _mov_cr(bit, cr, base | late_bit, reg_name))  # no exit at all
        await return_to_vtl1_with_call(vp)
        assert await set_regs(vp, (Reg.CR_INTERCEPT_CONTROL, control)) == ok(1)
        assert getattr(await vp.tdx_state(Vtl.VTL0), field) == default | first | late_bit
        await return_to_vtl0(vp)
        await _intercepted(vp, _mov_cr(bit, cr, base, reg_name))


@POLICIES
async def test_mask_shrunk_after_the_control_exits_but_does_not_intercept(commit_policy: str) -> None:
    """Cr0Mask cleared after the control: a TS change still exits (stale VMCS mask) but completes."""
    async with checked_runtime() as rt:
        vp = await _vtl0_ready(rt, commit_policy, 0x1)
        await return_to_vtl1_with_call(vp)
        assert await set_regs(vp, (Reg.CR_INTERCEPT_CR0_MASK, 0)) == ok(1)
        assert (await vp.tdx_state(Vtl.VTL0)).cr0_guest_host_mask == DEFAULT_CR0_GUEST_HOST_MASK | CR0_MASK
        await return_to_vtl0(vp)
        await _completed(vp, _mov_cr(0, 0, VTL0_CR0 | CR0_TS, Reg.CR0))
        await _completed(vp, _mov_cr(0, 0, VTL0_CR0 | CR0_TS | CR0_PG, Reg.CR0))


# ---- refused control values and VTL1's own writes ------------------------------------------------


@POLICIES
async def test_read_sgx_and_reserved_bits_are_refused(commit_policy: str) -> None:
    """Each unsupported bit (reads, SGX 24, 29-63), alone or with a good one: InvalidRegisterValue."""
    async with checked_runtime() as rt:
        vp = await _vtl0_ready(rt, commit_policy, 0x1)
        await return_to_vtl1_with_call(vp)
        before = await vp.tdx_state(Vtl.VTL0)
        for bit in UNSUPPORTED_BITS:
            for value in (1 << bit, 1 << bit | 0x2):
                out = await set_regs(vp, (Reg.CR_INTERCEPT_CONTROL, value))
                assert out == status(HvStatus.INVALID_REGISTER_VALUE), bit
        assert await vp.execute(GetVpRegisters(names=[Reg.CR_INTERCEPT_CONTROL])) == ok(1, [0x1])
        after = await vp.tdx_state(Vtl.VTL0)
        assert (after.cr0_guest_host_mask, after.cr4_guest_host_mask, after.secondary_controls) == (
            before.cr0_guest_host_mask,
            before.cr4_guest_host_mask,
            before.secondary_controls,
        )
        assert {3, 5, 7, 9, 11, 13, 24} <= set(UNSUPPORTED_BITS)


@POLICIES
async def test_vtl1_own_writes_are_never_intercepted(commit_policy: str) -> None:
    """Every bit armed: VTL1's own MOV CR, XSETBV, LGDT... and WRMSRs complete, as does SetVpRegisters."""
    async with checked_runtime() as rt:
        vp = await _vtl0_ready(rt, commit_policy, SUPPORTED)
        await return_to_vtl1_with_call(vp)
        own = await regs(vp, Vtl.VTL1, Reg.CR0, Reg.CR4, Reg.APIC_BASE, Reg.EFER)
        actions: list[tuple[Action, Reg | None, int]] = [
            (MovToCr(cr=0, value=own[Reg.CR0] | CR0_TS), Reg.CR0, own[Reg.CR0] | CR0_TS),
            (
                MovToCr(cr=4, value=own[Reg.CR4] | CR4_OSXSAVE | CR4_PGE),
                Reg.CR4,
                own[Reg.CR4] | CR4_OSXSAVE | CR4_PGE,
            ),
            (Xsetbv(value=0x7), Reg.XFEM, 0x7),
            (Wrmsr(msr=Msr.APIC_BASE, value=own[Reg.APIC_BASE]), Reg.APIC_BASE, own[Reg.APIC_BASE]),
            (Wrmsr(msr=Msr.EFER, value=own[Reg.EFER]), Reg.EFER, own[Reg.EFER]),
        ]
        actions += [
            (case.action, case.register, case.applied)
            for case in CASES
            if isinstance(case.action, (Wrmsr, LoadTableRegister)) and case.bit not in (12, 14)
        ]
        actions.append((Wrmsr(msr=Msr.PL3_SSP, value=0xFFFF_8000_0000_9000), None, 0))
        for action, name, value in actions:
            rip = (await regs(vp, Vtl.VTL1, Reg.RIP))[Reg.RIP]
            assert await vp.execute(action) == Completed(), action
            assert vp.active_vtl == Vtl.VTL1
            assert (await regs(vp, Vtl.VTL1, Reg.RIP))[Reg.RIP] > rip
            if name is not None:
                assert (await regs(vp, Vtl.VTL1, name))[name] == value, action
        assert await vp.sint0_message(Vtl.VTL1) is None
        # VTL1 writing VTL0's registers through the hypercall is not intercepted either.
        batch = ((Reg.CR0, VTL0_CR0 | CR0_TS | CR0_PG), (Reg.CR4, VTL0_CR4 | CR4_SMEP))
        assert await set_regs(vp, *batch, target_vtl=Vtl.VTL0) == ok(2)
        assert await regs(vp, Vtl.VTL0, Reg.CR0, Reg.CR4) == dict(batch)
        assert await vp.sint0_message(Vtl.VTL1) is None


@POLICIES
async def test_xsetbv_is_validated_before_the_intercept(commit_policy: str) -> None:
    """XCr0Write armed: XSETBV without CR4.OSXSAVE, or without x87, is #GP, not an intercept."""
    async with checked_runtime() as rt:
        vp = await _vtl0_ready(rt, commit_policy, 0x4)
        gp = ExceptionInjected(vector=13, error_code=0)
        assert await vp.execute(Xsetbv(value=0x2)) == gp
        await return_to_vtl1_with_call(vp)
        assert await set_regs(vp, (Reg.CR4, CR4_PAE), target_vtl=Vtl.VTL0) == ok(1)
        await return_to_vtl0(vp)
        assert await vp.execute(Xsetbv(value=0x3)) == gp
        assert vp.active_vtl == Vtl.VTL0
        assert await vp.sint0_message(Vtl.VTL1) is None


# ---- Appendix B item 13: the SSP bitmap / forwarding mismatch ---------------------------------------


@POLICIES
@pytest.mark.parametrize(
    ("msr", "control"),
    [
        pytest.param(Msr.PL3_SSP, 1 << PLS_SSP_BIT, id="pl3-ssp"),
        pytest.param(Msr.PL3_SSP, SUPPORTED, id="pl3-ssp-all-bits"),
        pytest.param(Msr.INTERRUPT_SSP_TABLE_ADDR, 1 << PLS_SSP_BIT, id="isst-without-bit28"),
    ],
)
async def test_unforwarded_exit_is_fatal_for_the_partition(
    commit_policy: str, msr: Msr, control: int
) -> None:
    """MsrPlsSspWrite makes the write exit but nothing forwards it: an invalid value is refused
    with #GP first (DOMAIN 7.4), a valid one reaches OpenHCL's unreachable!() and ends the whole
    partition (DOMAIN 7.2: panic = 'abort'); another partition carries on."""
    async with checked_runtime() as rt:
        part = await new_partition(rt, commit_policy=commit_policy)
        vp = await enter_vtl1(part)
        await enable_synic(vp)
        start = StartVirtualProcessor(vp_index=1, target_vtl=Vtl.VTL0, context=long_mode_context(0x9000))
        assert await vp.execute(start) == ok()
        await arm(vp, control)
        assert msr in (await vp.tdx_state(Vtl.VTL0)).msr_write_intercepts
        await return_to_vtl0(vp)
        gp = ExceptionInjected(vector=13, error_code=0)
        for invalid in (0xFFFF_8000_0000_9001, 0x0100_0000_0000_0000):  # misaligned; not canonical
            if msr == Msr.INTERRUPT_SSP_TABLE_ADDR and invalid & 3:
                continue  # only canonicality is checked for INTERRUPT_SSP_TABLE_ADDR
            assert await vp.execute(Wrmsr(msr=msr, value=invalid)) == gp
        with pytest.raises(
            PartitionFailed, match=f"partition {part.partition_id} vp 0 VTL0: WRMSR {int(msr):#x}"
        ):
            await vp.execute(Wrmsr(msr=msr, value=0xFFFF_8000_0000_9000))
        assert part.failure is not None
        assert f"{int(msr):#x}" in part.failure
        with pytest.raises(PartitionFailed):
            await vp.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS]))
        with pytest.raises(PartitionFailed):
            await vp.tdx_state(Vtl.VTL0)
        assert vp.statistics().failed
        # VP 1 (started before the failure) is lost with the partition (DOMAIN 7.2) ...
        with pytest.raises(PartitionFailed, match=re.escape(part.failure)):
            await part.vp(1).execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS]))
        # ... and a new partition is unaffected.
        other = (await new_partition(rt)).vp(0)
        assert await other.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x1_0000])


@POLICIES
async def test_isst_bit_alone_guards_nothing(commit_policy: str) -> None:
    """Bit 28 without bit 27: INTERRUPT_SSP_TABLE_ADDR's bitmap bit is clear, the write never exits."""
    async with checked_runtime() as rt:
        vp = await _vtl0_ready(rt, commit_policy, 1 << ISST_BIT)
        assert (await vp.tdx_state(Vtl.VTL0)).msr_write_intercepts == ()
        isst = next(case for case in CASES if case.bit == ISST_BIT)
        await _completed(vp, isst)


# ---- derived VMCS state follows the registration (invariants 4-6) ---------------------------------


def _expected_derived(control: int) -> tuple[int, int, int, tuple[int, ...]]:
    """(CR0 mask, CR4 mask, secondary controls, MSR write intercepts) of VTL0 for ``control``."""
    cr0 = DEFAULT_CR0_GUEST_HOST_MASK | (CR0_MASK if control & 0x1 else 0)
    cr4 = DEFAULT_CR4_MASK | (CR4_MASK if control & 0x2 else 0)
    secondary = SECONDARY_CONTROL_MODE_BASED_EXECUTE
    if control & (0xF << 15):
        secondary |= SECONDARY_CONTROL_DESCRIPTOR_TABLE_EXITING
    msrs: tuple[int, ...] = (Msr.S_CET,) if control & 1 << 26 else ()
    if control & 1 << PLS_SSP_BIT:
        msrs += ALL_REGISTERED_MSRS
    return cr0, cr4, secondary, msrs


async def _check_derived(vp: Vp, control: int) -> None:
    vtl0 = await vp.tdx_state(Vtl.VTL0)
    got = (
        vtl0.cr0_guest_host_mask,
        vtl0.cr4_guest_host_mask,
        vtl0.secondary_controls,
        vtl0.msr_write_intercepts,
    )
    assert got == _expected_derived(control)
    assert vtl0.cr4_guest_host_mask & CR4_MCE  # issue #1091: MCE always host-owned
    vtl1 = await vp.tdx_state(Vtl.VTL1)
    assert (vtl1.cr0_guest_host_mask, vtl1.cr4_guest_host_mask) == (
        DEFAULT_CR0_GUEST_HOST_MASK,
        DEFAULT_CR4_MASK,
    )
    assert vtl1.secondary_controls == 0
    assert vtl1.msr_write_intercepts == ()


@POLICIES
@pytest.mark.parametrize("bit", SUPPORTED_BITS)
async def test_derived_state_follows_each_bit(commit_policy: str, bit: int) -> None:
    """Arming one bit sets exactly its VMCS effect on VTL0 (none on VTL1); disarming restores the defaults."""
    async with checked_runtime() as rt:
        vp = await _vtl0_ready(rt, commit_policy, 1 << bit)
        await _check_derived(vp, 1 << bit)
        await return_to_vtl1_with_call(vp)
        assert await set_regs(vp, (Reg.CR_INTERCEPT_CONTROL, 0)) == ok(1)
        await _check_derived(vp, 0)


@POLICIES
async def test_derived_state_with_every_bit(commit_policy: str) -> None:
    """All 22 bits: masks widened, descriptor-table exiting, S_CET and SSP MSRs write-intercepted."""
    async with checked_runtime() as rt:
        vp = await _vtl0_ready(rt, commit_policy, SUPPORTED)
        await _check_derived(vp, SUPPORTED)
        vtl0 = await vp.tdx_state(Vtl.VTL0)
        assert (
            vtl0.secondary_controls
            == SECONDARY_CONTROL_MODE_BASED_EXECUTE | SECONDARY_CONTROL_DESCRIPTOR_TABLE_EXITING
        )
        assert set(vtl0.msr_write_intercepts) == {Msr.S_CET, *ALL_REGISTERED_MSRS}


@pytest.mark.parametrize("mbec", [False, True])
async def test_mbec_control_is_always_set_for_vtl0(mbec: bool) -> None:
    """Secondary-control MBEC (0x40_0000) is on for VTL0 from creation, whatever the guest's MBEC choice."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp = part.vp(0)
        assert (await vp.tdx_state(Vtl.VTL0)).secondary_controls == SECONDARY_CONTROL_MODE_BASED_EXECUTE
        vp = await enter_vtl1(part, mbec=mbec)
        assert (await vp.tdx_state(Vtl.VTL0)).secondary_controls == SECONDARY_CONTROL_MODE_BASED_EXECUTE
        assert (await vp.tdx_state(Vtl.VTL1)).secondary_controls == 0
        await arm(vp, 0)
        assert (await vp.tdx_state(Vtl.VTL0)).secondary_controls & SECONDARY_CONTROL_MODE_BASED_EXECUTE


# ---- the MSRs behind the fixes: XSS is backed per VTL, unregistered CET MSRs pass through ---------


@POLICIES
async def test_xss_write_is_kept_per_vtl(commit_policy: str) -> None:
    """WRMSR IA32_XSS (not armed) lands in the writer's VTL and reads back; unsupported bits are #GP."""
    async with checked_runtime() as rt:
        vp = await _vtl0_ready(rt, commit_policy, 0)
        assert await vp.execute(Wrmsr(msr=Msr.XSS, value=0x1800)) == Completed()
        assert await vp.execute(Rdmsr(msr=Msr.XSS)) == Completed(value=0x1800)
        for bad in (0x1, 0x100, 0x2000, 1 << 40):
            assert await vp.execute(Wrmsr(msr=Msr.XSS, value=bad)) == ExceptionInjected(
                vector=13, error_code=0
            )
        assert await regs(vp, Vtl.VTL0, Reg.XSS) == {Reg.XSS: 0x1800}
        assert await regs(vp, Vtl.VTL1, Reg.XSS) == {Reg.XSS: 0}  # private: VTL1's copy untouched


@POLICIES
async def test_unregistered_cet_msrs_pass_through(commit_policy: str) -> None:
    """Not registered, S_CET and the SSP MSRs do not exit: the write completes; bad SSPs are #GP."""
    async with checked_runtime() as rt:
        vp = await _vtl0_ready(rt, commit_policy, 0)
        gp = ExceptionInjected(vector=13, error_code=0)
        for msr in (Msr.S_CET, *ALL_REGISTERED_MSRS):
            rip = (await regs(vp, Vtl.VTL0, Reg.RIP))[Reg.RIP]
            assert await vp.execute(Wrmsr(msr=msr, value=0xFFFF_8000_0000_1000)) == Completed()
            assert await regs(vp, Vtl.VTL0, Reg.RIP) == {Reg.RIP: rip + 2}
        for msr in (Msr.PL0_SSP, Msr.PL3_SSP):
            assert await vp.execute(Wrmsr(msr=msr, value=0xFFFF_8000_0000_1002)) == gp  # not 4-byte aligned
        for msr in (Msr.PL1_SSP, Msr.INTERRUPT_SSP_TABLE_ADDR):
            assert await vp.execute(Wrmsr(msr=msr, value=0x0100_0000_0000_0000)) == gp  # not canonical
        assert vp.active_vtl == Vtl.VTL0
