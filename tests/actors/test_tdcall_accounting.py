"""TDCALL accounting over random register sequences (DOMAIN 7.1), on the synchronous core.

VTL1 drives VTL0 with random SetVpRegisters / GetVpRegisters elements, CR-intercept
registrations and normal or fast VTL returns (each followed by a VTL call back), and commits
VTL0 at random points. Two properties:

(a) batched: the commit is a write-back. Nothing ever reads (TDG.VP.RD stays 0), and each
    commit issues exactly one TDG.VP.WR per field of the VTL's VMCS image whose value changed
    in that commit (the image is the write-back copy; entry controls only when bit 9 changes).
(b) eager: each path issues what OpenHCL issues. ``_Reference`` re-derives the counts from the
    table of DOMAIN 7.1 (and the OpenVMM source it cites), written here independently of
    ``actors._tdcalls``: from the register values before a call and the value written.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import msgspec
from hypothesis import event, given, settings, strategies as st

from actors import PartitionConfig, PartitionSupervisor, VpActor, check_vp_invariants
from protocol import (
    HV_VP_INDEX_SELF,
    CrInterceptControl,
    EnablePartitionVtl,
    EnableVpVtl,
    GetVpRegisters,
    HvRegisterName as Reg,
    HvStatus,
    HypercallResult,
    RegisterAssoc,
    SetVpRegisters,
    Vtl,
    VtlCall,
    VtlReturn,
    VtlSwitched,
    WriteVtlControl,
)
from tests.guest import long_mode_context

if TYPE_CHECKING:
    from actors._state import VpState
    from protocol import Action, Outcome

# ---- DOMAIN 7.1, transcribed --------------------------------------------------------------------

# TDX ``ShadowedRegister::guest_owned_mask``: CR0 ET MP EM TS WP AM PE PG; CR4 VME PVI TSD DE PSE
# PAE PGE PCE OSFXSR OSXMMEXCPT UMIP LA57 FSGSBASE PCIDE OSXSAVE SMEP SMAP CET.
CR0_OWNED: Final = 0x10 | 0x2 | 0x4 | 0x8 | 0x1_0000 | 0x4_0000 | 0x1 | 0x8000_0000
CR4_OWNED: Final = sum(1 << bit for bit in (0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 16, 17, 18, 20, 21, 23))
ET: Final = 0x10
PG: Final = 0x8000_0000
LME: Final = 1 << 8
LMA: Final = 1 << 10
#: "registers(): 8 segments x 4, GDTR/IDTR x 2, CR0, CR3, CR4" = 39 RD.
REGISTERS_RD: Final = 8 * 4 + 2 * 2 + 1 + 1 + 1
#: "set_registers(): 3 RD; 32 + 4 + 1 + 1 + 1 + 1 = 40 WR, plus 1 for each change".
SET_REGISTERS_RD: Final = 3
SET_REGISTERS_WR: Final = 32 + 4 + 1 + 1 + 1 + 1
#: HCVM set_vp_register / get_vp_register: the registers() group.
SET_GROUP: Final = {
    Reg.EFER,
    Reg.CR0,
    Reg.CR4,
    Reg.CR8,
    Reg.LDTR,
    Reg.GDTR,
    Reg.IDTR,
    Reg.RIP,
    Reg.RFLAGS,
    Reg.RSP,
}
GET_GROUP: Final = (
    SET_GROUP
    | {Reg.CR2, Reg.CR3, Reg.ES, Reg.CS, Reg.SS, Reg.DS, Reg.FS, Reg.GS, Reg.TR}
    | {Reg.RAX + i for i in range(16)}
)
#: "Other registers have their own, cheaper accessors" (UhVpStateAccess for TDX): virtual_msrs
#: reads SYSENTER_CS/EIP/ESP from the VMCS and set_virtual_msrs writes them back; debug_regs
#: reads DR7 and set_debug_regs writes it; pat reads, set_pat writes GUEST_PAT.
VIRTUAL_MSRS: Final = {
    Reg.STAR,
    Reg.LSTAR,
    Reg.CSTAR,
    Reg.SYSENTER_CS,
    Reg.SYSENTER_EIP,
    Reg.SYSENTER_ESP,
    Reg.SFMASK,
}
GET_OTHER: Final = {**dict.fromkeys(VIRTUAL_MSRS | {Reg.KERNEL_GS_BASE}, 3), Reg.PAT: 1}
GET_OTHER.update(dict.fromkeys((Reg.DR0, Reg.DR1, Reg.DR2, Reg.DR3, Reg.DR7), 1))
SET_OTHER: Final = {**dict.fromkeys(VIRTUAL_MSRS, (3, 3)), Reg.DR3: (1, 1), Reg.DR7: (1, 1), Reg.PAT: (0, 1)}
#: TDX cr_intercept_registration: two CR masks, secondary controls, six MSR-bitmap bits.
REGISTRATION_WR: Final = 2 + 1 + 6


def set_registers_cost(old: dict[int, int], new_cr0: int, new_cr4: int, efer_written: int) -> tuple[int, int]:
    """registers() + set_registers() with the given values written (DOMAIN 7.1 table)."""
    new_cr0 |= ET  # write_cr0 ORs ET
    writes = SET_REGISTERS_WR
    writes += bool((old[Reg.CR0] ^ new_cr0) & CR0_OWNED)
    writes += bool((old[Reg.CR4] ^ new_cr4) & CR4_OWNED)
    writes += efer_written != old[Reg.EFER]
    lma = bool(efer_written & LME and new_cr0 & PG)
    writes += lma != bool(efer_written & LMA)
    return REGISTERS_RD + SET_REGISTERS_RD, writes


# ---- the synchronous driver -----------------------------------------------------------------------


class _Core:
    """One 1-VP partition driven synchronously, as the scheduler drives it."""

    def __init__(self, policy: str) -> None:
        config = PartitionConfig(commit_policy=policy, batch_max_updates=1 << 20)  # type: ignore[arg-type]
        self.supervisor = PartitionSupervisor(0, config)
        self.actor = VpActor(0, config, self.supervisor.view)

    @property
    def vp(self) -> VpState:
        return self.actor.state

    def run(self, action: Action) -> Outcome:
        result: Any = self.actor.execute(action)
        if isinstance(result, types.GeneratorType):
            reply: Any = None
            while True:
                try:
                    request = result.send(reply)
                except StopIteration as stop:
                    result = stop.value
                    break
                reply, effects = self.supervisor.handle(request)
                for _, control in effects:
                    self.actor.deliver(control)
        if self.actor.has_controls:
            self.actor.apply_controls()
        check_vp_invariants(self.vp)
        outcome: Outcome = result
        return outcome

    def counts(self, vtl: Vtl) -> tuple[int, int]:
        state = self.vp.vtls[vtl]
        return state.vmcs_reads, state.vmcs_writes

    def committed(self, vtl: Vtl, *names: int) -> dict[int, int]:
        return {name: self.vp.vtls[vtl].regs.read_committed(name) for name in names}


def _bring_up(core: _Core) -> None:
    """VSM on VP 0, VTL1 in long mode, then a VTL call: VTL1 runs, VTL0 is at reset."""
    enable = EnableVpVtl(vp_index=HV_VP_INDEX_SELF, target_vtl=Vtl.VTL1, context=long_mode_context())
    for action in (EnablePartitionVtl(target_vtl=Vtl.VTL1), enable, VtlCall()):
        core.run(action)
    assert core.vp.active_vtl == Vtl.VTL1
    core.vp.commit_all()  # VTL1's context load, staged until VTL1 first runs


# ---- random sequences ---------------------------------------------------------------------------

Op: TypeAlias = tuple[str, Any]

_VALUES = st.one_of(
    st.integers(0, 0xFFFF),
    st.integers(0, (1 << 64) - 1),
    st.sampled_from([0x8000_0011, 0x8001_0033, 0x11, 0x31, 0x20, 0x220, 0xD01, 0x901, 0x800, 0x2, 0x246]),
)
_SET_NAMES = st.sampled_from(
    sorted(SET_GROUP | VIRTUAL_MSRS | {Reg.DR3, Reg.DR7, Reg.PAT, Reg.TSC_AUX, Reg.SINT0, Reg.KERNEL_GS_BASE})
)
_GET_NAMES = st.sampled_from(
    sorted(GET_GROUP | set(GET_OTHER) | {Reg.TSC_AUX, Reg.XFEM, Reg.SINT0, Reg.APIC_BASE})
)
_OPS: st.SearchStrategy[Op] = st.one_of(
    st.tuples(st.just("set"), st.tuples(_SET_NAMES, _VALUES)),
    st.tuples(st.just("set"), st.tuples(_SET_NAMES, _VALUES)),
    st.tuples(st.just("set"), st.tuples(_SET_NAMES, _VALUES)),
    st.tuples(st.just("get"), st.lists(_GET_NAMES, min_size=1, max_size=4)),
    st.tuples(st.just("register"), st.sampled_from([0x1, 0x3, 0x8000, 1 << 27, 0x1 | 1 << 26, 0])),
    st.tuples(st.just("return"), st.booleans()),
    st.tuples(st.just("commit"), st.none()),
)
SEQUENCES = st.lists(_OPS, min_size=1, max_size=30)


def _cr_intercept(value: int) -> SetVpRegisters:
    return SetVpRegisters(registers=[RegisterAssoc(name=Reg.CR_INTERCEPT_CONTROL, value=value)])


def _play(core: _Core, op: Op) -> Outcome | None:
    """Run one op from VTL1 (targeting VTL0); a return is followed by a VTL call back.

    The VTL call costs no TDCALL under either policy (RIP is not a VMCS field).
    """
    kind, arg = op
    outcome: Outcome | None = None
    if kind == "set":
        name, value = arg
        outcome = core.run(
            SetVpRegisters(registers=[RegisterAssoc(name=name, value=value)], target_vtl=Vtl.VTL0)
        )
    elif kind == "get":
        outcome = core.run(GetVpRegisters(names=arg, target_vtl=Vtl.VTL0))
    elif kind == "register":
        outcome = core.run(_cr_intercept(arg))
    elif kind == "return":
        core.run(WriteVtlControl(return_rax=0x1234, return_rcx=0x5678))
        outcome = core.run(VtlReturn(fast=arg))
        assert outcome == VtlSwitched(to_vtl=Vtl.VTL0, entry_reason=0)
        assert core.run(VtlCall()) == VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)
    return outcome


def _vm_entry_ok(core: _Core) -> bool:
    """Whether VTL0's committed state passes VM entry (a failed VtlReturn ends the sequence)."""
    core.vp.commit(Vtl.VTL0)
    return not core.vp.entry_failures(Vtl.VTL0)


# ---- (a) batched: a write-back ------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(sequence=SEQUENCES)
def test_batched_commit_writes_each_changed_field_once_and_reads_nothing(sequence: list[Op]) -> None:
    """(a): batched never reads; every commit writes exactly its changed VMCS image fields."""
    core = _Core("batched")
    _bring_up(core)
    writes_seen = 0
    for op in [*sequence, ("commit", None)]:
        kind = op[0]
        if kind == "return" and not _vm_entry_ok(core):
            event("VTL0 would fail VM entry: sequence ends")
            break
        if kind == "commit":
            state = core.vp.vtls[Vtl.VTL0]
            before = state.vmcs.full()
            writes = state.vmcs_writes
            core.vp.commit(Vtl.VTL0)
            after = state.vmcs.full()
            changed = [field for field in after if after[field] != before[field]]
            assert state.vmcs_writes - writes == len(changed), (changed, op)
            writes_seen += len(changed)
            continue
        counts = (core.counts(Vtl.VTL0), core.counts(Vtl.VTL1))
        # Other ops commit VTL0 only by the VtlReturn's VTL0 entry: checked the same way there.
        if kind == "return":
            state = core.vp.vtls[Vtl.VTL0]
            before = state.vmcs.full()
            writes = state.vmcs_writes
            _play(core, op)  # VTL0's entry after the return commits what the return staged
            after = state.vmcs.full()
            changed = [field for field in after if after[field] != before[field]]
            assert state.vmcs_writes - writes == len(changed)
            writes_seen += len(changed)
        else:
            _play(core, op)
            # VTL1's own commits (its RAX and RIP) touch no VMCS field.
            assert core.counts(Vtl.VTL1) == counts[1]
        assert core.vp.vtls[Vtl.VTL0].vmcs_reads == core.vp.vtls[Vtl.VTL1].vmcs_reads == 0
    event("batched wrote" if writes_seen else "batched wrote nothing")


# ---- (b) eager: OpenHCL's pattern, re-derived from the table --------------------------------------


class _Reference:
    """Expected (RD, WR) on VTL0 of each op, from DOMAIN 7.1 and the state before it."""

    def __init__(self, core: _Core) -> None:
        self.core = core

    def before(self) -> dict[int, int]:
        return self.core.committed(Vtl.VTL0, Reg.CR0, Reg.CR4, Reg.EFER)

    def set_element(self, old: dict[int, int], name: int, value: int, status: int) -> tuple[int, int]:
        if status != HvStatus.SUCCESS:
            return 0, 0  # refused by the access rule or validate_set_vp_register_value: no TDCALL
        value &= (1 << 64) - 1
        if name in SET_GROUP:
            # validate_set_vp_register_value drops CR0's reserved low bits (DOMAIN 3.2).
            cr0 = value & ~0x1FFA_FFC0 if name == Reg.CR0 else old[Reg.CR0]
            cr4 = value if name == Reg.CR4 else old[Reg.CR4]
            efer = value if name == Reg.EFER else old[Reg.EFER]
            return set_registers_cost(old, cr0, cr4, efer)
        return SET_OTHER.get(name, (0, 0))

    def get_elements(self, names: list[int], completed: int) -> tuple[int, int]:
        reads = 0
        for name in names[:completed]:
            reads += REGISTERS_RD if name in GET_GROUP else GET_OTHER.get(name, 0)
        return reads, 0

    def normal_return(self, old: dict[int, int]) -> tuple[int, int]:
        """registers() + set_registers() to load RAX/RCX; CR0/CR4/EFER rewritten as they are."""
        return set_registers_cost(old, old[Reg.CR0], old[Reg.CR4], old[Reg.EFER])


@settings(max_examples=200, deadline=None)
@given(sequence=SEQUENCES)
def test_eager_counts_equal_the_domain_table(sequence: list[Op]) -> None:
    """(b): under eager, every op's TDG.VP.RD/WR on VTL0 equal the DOMAIN 7.1 re-derivation."""
    core = _Core("eager")
    _bring_up(core)
    reference = _Reference(core)
    for op in sequence:
        kind, arg = op
        if kind == "commit":
            counts = core.counts(Vtl.VTL0)
            core.vp.commit(Vtl.VTL0)
            assert core.counts(Vtl.VTL0) == counts  # eager's commits add nothing of their own
            continue
        if kind == "return" and not _vm_entry_ok(core):
            event("VTL0 would fail VM entry: sequence ends")
            break
        old = reference.before()
        start = core.counts(Vtl.VTL0)
        vtl1 = core.counts(Vtl.VTL1)
        outcome = _play(core, op)
        if kind == "return":  # fast: nothing; normal: registers() + set_registers() on VTL0
            expected = (0, 0) if arg else reference.normal_return(old)
        else:
            assert isinstance(outcome, HypercallResult)
            if kind == "set":
                expected = reference.set_element(old, arg[0], arg[1], outcome.status)
            elif kind == "get":
                expected = reference.get_elements(arg, outcome.reps_completed)
            else:
                ok = outcome.status == HvStatus.SUCCESS
                assert ok == (not arg & ~CrInterceptControl.SUPPORTED)
                expected = (0, REGISTRATION_WR) if ok else (0, 0)
        got = core.counts(Vtl.VTL0)
        assert (got[0] - start[0], got[1] - start[1]) == expected, (op, old)
        assert core.counts(Vtl.VTL1) == vtl1  # VTL1's RAX/RIP are not VMCS fields
        event(f"{kind}: {'charged' if any(expected) else 'free'}")


def test_reference_matches_the_documented_examples() -> None:
    """DOMAIN 7.1's worked examples: SetVpRegisters(RIP) 42 RD + 40 WR, GetVpRegisters(CR0) 39 RD."""
    core = _Core("eager")
    _bring_up(core)
    old = _Reference(core).before()
    assert _Reference(core).set_element(old, Reg.RIP, 0x1000, HvStatus.SUCCESS) == (42, 40)
    assert _Reference(core).get_elements([Reg.CR0], 1) == (39, 0)
    assert _Reference(core).normal_return(old) == (42, 40)
    start = core.counts(Vtl.VTL0)
    core.run(SetVpRegisters(registers=[RegisterAssoc(name=Reg.RIP, value=0x1000)], target_vtl=Vtl.VTL0))
    core.run(GetVpRegisters(names=[Reg.CR0], target_vtl=Vtl.VTL0))
    assert core.counts(Vtl.VTL0) == (start[0] + 42 + 39, start[1] + 40)
    state = msgspec.structs.asdict(core.actor.tdx_state(Vtl.VTL0))
    assert state["vmcs_reads"] == start[0] + 81
