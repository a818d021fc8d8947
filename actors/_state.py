"""Per-VP state: register files per VTL, the derived TDX state, and the commit that joins them.

A VP owns a shared register file and one ``VtlState`` per lower VTL. Register writes are staged;
``commit`` applies a VTL's staged writes, recomputes the VMCS fields they touch and publishes
the new ``TdxL2State`` in the same step, so nothing can observe registers and execution mode
out of step. TDCALL accounting (DOMAIN 7.1): under the eager policy the rules charge OpenHCL's
TDG.VP.RD/WR pattern path by path (``count_tdcalls``, the numbers in ``actors._tdcalls``);
under the batched policy the commit is a write-back of the VMCS image and counts one TDG.VP.WR
per field whose value changed, and nothing reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from protocol import HvRegisterName as Reg, Vtl
from protocol._x86 import APIC_BASE_BSP, APIC_BASE_DEFAULT, CR0_PE

from ._entry import entry_failures, rip64_mode
from ._faults import FAULTS
from ._registers import PRIVATE_RESET, SHARED_RESET, RegisterFile
from ._tdx import (
    MODE_REGISTERS,
    PLAIN_FIELDS,
    SEGMENT_FIELDS,
    TABLE_FIELDS,
    VMCS_REGISTERS,
    CrRegistration,
    TdxL2State,
    derive_lma,
    mode_fields,
    register_fields,
)
from ._vtl import GuestVsmVpState, VtlState

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._config import PartitionConfig

__all__ = ("GuestVsmVpState", "VpState", "VtlState")

_PRIVATE_RESET_BSP: Final = PRIVATE_RESET | {Reg.APIC_BASE: APIC_BASE_DEFAULT | APIC_BASE_BSP}
# Plain ints for the hot paths: an IntEnum member lookup costs ~0.1 us each time.
_RIP: Final = int(Reg.RIP)
_CR0: Final = int(Reg.CR0)
_CR4: Final = int(Reg.CR4)
_EFER: Final = int(Reg.EFER)
_SS: Final = int(Reg.SS)
_U64: Final = (1 << 64) - 1

# What a commit does for a changed register, as flags (one dict lookup per changed register).
_PLAIN: Final = 1  # one VMCS field (PLAIN_FIELDS)
_MULTI: Final = 2  # several VMCS fields (segments, tables)
_MODE: Final = 4  # CR0/CR4/EFER: re-derive the mode fields
_RIP_CHANGED: Final = 8  # only VM-entry check 5 is affected: checked in the commit itself
_CHECKED: Final = 16  # the VM-entry checks are due
_COMMIT_FLAGS: Final[dict[int, int]] = {
    **dict.fromkeys(PLAIN_FIELDS, _PLAIN),
    **dict.fromkeys(SEGMENT_FIELDS, _MULTI),
    **dict.fromkeys(TABLE_FIELDS, _MULTI),
    **dict.fromkeys(MODE_REGISTERS, _MODE | _CHECKED),
    Reg.CR3: _PLAIN | _CHECKED,
    Reg.PAT: _PLAIN | _CHECKED,
    Reg.CS: _MULTI | _CHECKED,
    Reg.TR: _MULTI | _CHECKED,
    Reg.RFLAGS: _CHECKED,
    Reg.RIP: _RIP_CHANGED,
}


class VpState:
    """Everything one VP actor owns. Only that actor mutates it."""

    __slots__ = (
        "active_vtl",
        "batch_max_updates",
        "config",
        "eager",
        "failure",
        "index",
        "running",
        "shared",
        "vtl1",
        "vtls",
    )

    def __init__(self, index: int, config: PartitionConfig) -> None:
        self.index = index
        self.config = config
        self.eager = config.commit_policy == "eager"
        self.batch_max_updates = config.batch_max_updates
        self.active_vtl = Vtl.VTL0
        self.running = index == 0
        self.failure: str | None = None
        self.shared = RegisterFile(SHARED_RESET)
        reset = _PRIVATE_RESET_BSP if index == 0 else PRIVATE_RESET
        fixed1 = config.vmx_cr4_fixed1
        self.vtls = (VtlState(Vtl.VTL0, reset, fixed1), VtlState(Vtl.VTL1, reset, fixed1))
        self.vtl1: GuestVsmVpState | None = None

    def __repr__(self) -> str:
        state = "FAILED" if self.failure else "RUNNING" if self.running else "STOPPED"
        return f"<VpState vp={self.index} vtl={self.active_vtl.name} {state}>"

    # ---- register access (staged view) ---------------------------------------------------------

    def read(self, vtl: int, name: int) -> int:
        """What the guest sees in ``name`` of ``vtl`` (shared names come from the shared file)."""
        regs = self.shared if name in SHARED_RESET else self.vtls[vtl].regs
        staged = regs.staged  # RegisterFile.read, inlined (every instruction reads)
        if name in staged:
            return staged[name]
        committed = regs.committed
        if name in committed:
            return committed[name]
        return regs.reset[name]

    def cpl(self, vtl: int) -> int:
        """Current privilege level of ``vtl``: SS.DPL in protected mode, 0 in real mode."""
        if not self.read(vtl, _CR0) & CR0_PE:
            return 0
        return (self.read(vtl, _SS) >> 117) & 3  # SS attributes bits 5-6 (value bits 112-127)

    def stage(self, vtl: int, name: int, value: int) -> None:
        """Accept one register write for ``vtl``; commit at once under the eager policy.

        A CR0 or EFER write re-derives EFER.LMA in the staged view, so every guest-visible read
        equals OpenHCL's recompute-after-every-register.
        """
        self._stage_one(vtl, name, value)
        state = self.vtls[vtl]
        state.staged_updates += 1
        if self.eager or state.staged_updates >= self.batch_max_updates:
            self.commit(vtl)

    def advance_rip(self, vtl: int, length: int) -> None:
        """Stage RIP += ``length`` for ``vtl`` (an instruction or hypercall completed)."""
        state = self.vtls[vtl]
        regs = state.regs
        staged = regs.staged
        if _RIP in staged:  # RegisterFile.read, inlined (every instruction advances RIP)
            rip = staged[_RIP]
        else:
            committed = regs.committed
            rip = committed[_RIP] if _RIP in committed else regs.reset[_RIP]
        staged[_RIP] = (rip + length) & _U64
        state.staged_updates += 1
        if self.eager or state.staged_updates >= self.batch_max_updates:
            self.commit(vtl)

    def _stage_one(self, vtl: int, name: int, value: int) -> None:
        if FAULTS.hook is not None:
            FAULTS.hook("stage")
        if name in SHARED_RESET:
            self.shared.staged[name] = value
            return
        regs = self.vtls[vtl].regs
        regs.staged[name] = value
        if name in (_CR0, _EFER):
            efer = regs.read(_EFER)
            derived = derive_lma(efer, regs.read(_CR0))
            if derived != efer:
                regs.staged[_EFER] = derived

    def stage_registration(self, registration: CrRegistration) -> None:
        """Stage VTL1's new CR-intercept registration for VTL0's VMCS."""
        state = self.vtls[Vtl.VTL0]
        state.staged_registration = registration
        state.staged_updates += 1
        if self.eager or state.staged_updates >= self.batch_max_updates:
            self.commit(Vtl.VTL0)

    def set_registers(self, vtl: int, values: Iterable[tuple[int, int]]) -> None:
        """Stage several registers of ``vtl`` as one update: one TDX ``set_registers`` call.

        Like OpenHCL's ``set_registers``, the whole set is one update: the eager policy commits
        it once, not once per register.
        """
        for name, value in values:
            self._stage_one(vtl, name, value)
        state = self.vtls[vtl]
        state.staged_updates += 1
        if self.eager or state.staged_updates >= self.batch_max_updates:
            self.commit(vtl)

    def hardware_write(self, vtl: int, name: int, value: int) -> None:
        """The processor itself writes ``name`` of ``vtl`` (an instruction that did not exit).

        Committed at once and never counted as a TDG.VP.WR under either policy: the write-back
        copy takes the processor's value. Updates staged before it are committed first, with
        their own accounting.
        """
        self.commit(vtl)
        self._stage_one(vtl, name, value)
        self.vtls[vtl].staged_updates += 1
        self.commit(vtl, counted=False)

    def count_tdcalls(self, vtl: int, reads: int, writes: int) -> None:
        """Charge OpenHCL's TDG.VP.RD/WR of one path to ``vtl`` (the eager policy only)."""
        if self.eager:
            state = self.vtls[vtl]
            state.vmcs_reads += reads
            state.vmcs_writes += writes

    # ---- commit --------------------------------------------------------------------------------

    def commit(self, vtl: int, *, counted: bool = True) -> int:
        """Apply ``vtl``'s staged updates and derive its VMCS; return the TDG.VP.WR counted.

        Under the batched policy (and ``counted``) every VMCS field whose value changes is one
        TDG.VP.WR of the write-back; the eager policy's TDCALLs were counted by the paths.
        """
        state = self.vtls[vtl]
        if not state.staged_updates:
            return 0
        if FAULTS.hook is not None:
            FAULTS.hook("commit")
        regs = state.regs
        staged = regs.staged
        if (
            len(staged) == 1
            and _RIP in staged
            and state.staged_registration is None
            and not self.shared.staged
        ):
            # The hot path: an instruction's RIP advance alone, which is no VMCS field (DOMAIN
            # 7.1); the general loop below does the same for it, at several times the cost.
            value = staged[_RIP]
            committed = regs.committed
            base = regs.reset[_RIP]
            if committed.get(_RIP, base) != value:
                if value == base:
                    del committed[_RIP]
                else:
                    committed[_RIP] = value
                top = value >> 56  # VM-entry check 5, as in the loop below
                if value >> 32 and not (state.rip64 and (top == 0 or top == 0xFF)):
                    state.entry_check = True
            staged.clear()  # (nothing holds on to it: cheaper than a new dict)
            state.commits += 1
            state.staged_updates = 0
            if FAULTS.hook is not None:
                FAULTS.hook("commit.applied")
            return 0
        if self.shared.staged:
            self.shared.commit()
        vmcs = state.vmcs
        writes = 0
        mode = False
        entry = 0
        if staged:
            # RegisterFile.commit, inlined with the VMCS update: this runs once per action.
            committed = regs.committed
            reset = regs.reset
            for name, value in staged.items():
                base = reset[name]
                if committed.get(name, base) == value:
                    continue
                if value == base:
                    del committed[name]
                else:
                    committed[name] = value
                flags = _COMMIT_FLAGS.get(name)
                if flags is None:
                    continue
                if flags == _RIP_CHANGED:
                    # The hot path (an instruction's RIP advance): check 5 inline, and only a RIP
                    # that could fail it (bits 63:32 set, and not canonical in 64-bit mode) makes
                    # the entry checks due.
                    top = value >> 56
                    if value >> 32 and not (state.rip64 and (top == 0 or top == 0xFF)):
                        entry = _CHECKED
                    continue
                entry |= flags
                if flags & _MODE:
                    mode = True
                elif flags & _PLAIN:
                    field = PLAIN_FIELDS[name]
                    if vmcs[field] != value:
                        vmcs[field] = value
                        writes += 1
                elif flags & _MULTI:
                    for field, field_value in register_fields(name, value):
                        if vmcs[field] != field_value:
                            vmcs[field] = field_value
                            writes += 1
            regs.staged = {}
        read = regs.read_committed
        if state.staged_registration is not None:
            state.registration = state.staged_registration
            state.staged_registration = None
            mode = True
        if mode:
            derived = mode_fields(
                state.vtl, read(_CR0), read(_CR4), read(_EFER), state.registration, self.config.vmx_cr4_fixed1
            )
            for field, value in derived:
                if vmcs[field] != value:
                    vmcs[field] = value
                    writes += 1
        if entry & _CHECKED:
            state.entry_check = True
        state.commits += 1
        state.staged_updates = 0
        if counted and not self.eager:
            state.vmcs_writes += writes
        if FAULTS.hook is not None:
            FAULTS.hook("commit.applied")
        return writes if counted and not self.eager else 0

    def nothing_to_batch(self) -> bool:
        """True if all that is staged is the running VTL's own private registers outside the VMCS.

        An instruction's RIP advance (and RSP, RFLAGS, CR8, the syscall MSRs) touches no VMCS
        field: RIP, RSP and RFLAGS travel with TDG.VP.ENTER (DOMAIN 7.1), and the VTL's next
        entry commits them anyway. A batch window would batch nothing for them, so the
        scheduler commits them at once (every exiting instruction stages its RIP advance).
        VMCS fields, updates staged for the other VTL (what VTL1 sets on VTL0) and the shared
        registers both VTLs see (RAX and the other GPRs a hypercall completes with) keep their
        windows.
        """
        if self.shared.staged:
            return False
        vtl0, vtl1 = self.vtls
        state, other = (vtl1, vtl0) if self.active_vtl else (vtl0, vtl1)
        return (
            not other.staged_updates
            and state.staged_registration is None
            and VMCS_REGISTERS.isdisjoint(state.regs.staged)
        )

    def commit_all(self) -> int:
        """Commit every VTL that has staged updates (VTL0 first)."""
        vtl0, vtl1 = self.vtls
        writes = self.commit(0) if vtl0.staged_updates else 0
        if vtl1.staged_updates:
            writes += self.commit(1)
        return writes

    # ---- VM entry ------------------------------------------------------------------------------

    def entry_failures(self, vtl: int) -> list[str]:
        """The failed VM-entry checks of ``vtl``'s committed state (DOMAIN 7.2); [] to enter.

        The pure function ``actors._entry.entry_failures``; the commit only skips calling it
        when nothing it looks at changed since it last passed (a RIP that passes check 5).
        """
        state = self.vtls[vtl]
        vmcs = state.vmcs
        config = self.config
        problems = entry_failures(
            state.regs.read_committed, vmcs, config.vmx_cr4_fixed1, config.physical_address_bits
        )
        state.rip64 = rip64_mode(vmcs)
        if not problems:
            state.entry_check = False
        return problems

    def tdx_state(self, vtl: int) -> TdxL2State:
        """The committed derived state of ``vtl`` (call ``commit`` first to include staging)."""
        state = self.vtls[vtl]
        return TdxL2State.from_image(
            state.vtl,
            state.vmcs.full(),
            vmcs_reads=state.vmcs_reads,
            vmcs_writes=state.vmcs_writes,
            commits=state.commits,
        )
