"""Per-VP state: register files per VTL, the derived TDX state, and the commit that joins them.

A VP owns a shared register file and one ``VtlState`` per lower VTL. Register writes are staged;
``commit`` applies a VTL's staged writes, recomputes the VMCS fields they touch, counts one
modelled VMCS write per field whose value changed, and publishes the new ``TdxL2State`` in the
same step, so nothing can observe registers and execution mode out of step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from protocol import HvRegisterName as Reg, InitialVpContext, InterceptMessage, Vtl
from protocol._x86 import APIC_BASE_BSP, APIC_BASE_DEFAULT, CR0_PE

from ._registers import PRIVATE_RESET, SHARED_RESET, RegisterFile
from ._tdx import (
    MODE_REGISTERS,
    NO_REGISTRATION,
    PLAIN_FIELDS,
    CrRegistration,
    TdxL2State,
    VmcsImage,
    derive_lma,
    mode_fields,
    register_fields,
    vmcs_image,
)

if TYPE_CHECKING:
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
#: Reset VMCS images, shared by every VP with the same (VTL, CR4 FIXED1): never mutated.
_RESET_IMAGES: dict[tuple[int, int], dict[int, int]] = {}


def _reset_image(vtl: Vtl, vmx_cr4_fixed1: int) -> dict[int, int]:
    key = (vtl, vmx_cr4_fixed1)
    image = _RESET_IMAGES.get(key)
    if image is None:
        # APIC_BASE (the only BSP difference) is not a VMCS field, so one image fits every VP.
        image = vmcs_image(vtl, PRIVATE_RESET.__getitem__, NO_REGISTRATION, vmx_cr4_fixed1)
        _RESET_IMAGES[key] = image
    return image


class GuestVsmVpState:
    """VTL1 state of one VP (OpenHCL ``GuestVsmVpState``): exists once VTL1 was enabled here."""

    __slots__ = (
        "cr0_mask",
        "cr4_mask",
        "cr_intercept_control",
        "misc_enable_mask",
        "pending_event",
        "tlb_locked",
        "vp_mbec_enabled",
    )

    def __init__(self) -> None:
        self.pending_event: int | None = None
        self.cr_intercept_control = 0
        self.cr0_mask = 0
        self.cr4_mask = 0
        self.misc_enable_mask = 0
        self.vp_mbec_enabled = False
        self.tlb_locked = False


class VtlState:
    """One VTL of one VP: private registers, modelled VMCS, VP-assist VTL control, SINT0 slot."""

    __slots__ = (
        "commits",
        "entry_reason",
        "registration",
        "regs",
        "return_rax",
        "return_rcx",
        "sint0_message",
        "staged_registration",
        "staged_updates",
        "vina_asserted",
        "vmcs",
        "vmcs_writes",
        "vtl",
    )

    def __init__(self, vtl: Vtl, reset: dict[int, int], vmx_cr4_fixed1: int) -> None:
        self.vtl = vtl
        self.regs = RegisterFile(reset)
        self.registration = NO_REGISTRATION
        self.staged_registration: CrRegistration | None = None
        self.staged_updates = 0
        self.vmcs = VmcsImage(_reset_image(vtl, vmx_cr4_fixed1))
        self.vmcs_writes = 0
        self.commits = 0
        # VP assist page VTL control block (offsets 0x08, 0x10, 0x18).
        self.entry_reason = 0
        self.return_rax = 0
        self.return_rcx = 0
        self.vina_asserted = False
        self.sint0_message: InterceptMessage | None = None

    @property
    def dirty(self) -> bool:
        """True when staged updates wait for a commit."""
        return self.staged_updates > 0


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
        if name in SHARED_RESET:
            return self.shared.read(name)
        return self.vtls[vtl].regs.read(name)

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
        regs.staged[_RIP] = (regs.read(_RIP) + length) & _U64
        state.staged_updates += 1
        if self.eager or state.staged_updates >= self.batch_max_updates:
            self.commit(vtl)

    def _stage_one(self, vtl: int, name: int, value: int) -> None:
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
        if self.config.commit_policy == "eager":
            self.commit(Vtl.VTL0)

    def load_context(self, vtl: int, context: InitialVpContext) -> None:
        """Load an initial VP context into ``vtl`` as one ``set_registers`` call.

        Like OpenHCL's context load, the whole context is one update: the eager policy commits
        it once, not once per register.
        """
        for name, value in (
            (Reg.RIP, context.rip),
            (Reg.RSP, context.rsp),
            (Reg.RFLAGS, context.rflags),
            (Reg.CS, context.cs),
            (Reg.DS, context.ds),
            (Reg.ES, context.es),
            (Reg.FS, context.fs),
            (Reg.GS, context.gs),
            (Reg.SS, context.ss),
            (Reg.TR, context.tr),
            (Reg.LDTR, context.ldtr),
            (Reg.IDTR, context.idtr),
            (Reg.GDTR, context.gdtr),
            (Reg.CR3, context.cr3),
            (Reg.CR4, context.cr4),
            (Reg.EFER, context.efer),
            (Reg.CR0, context.cr0),
            (Reg.PAT, context.msr_cr_pat),
        ):
            self._stage_one(vtl, name, value)
        self.vtls[vtl].staged_updates += 1
        if self.config.commit_policy == "eager":
            self.commit(vtl)

    # ---- commit --------------------------------------------------------------------------------

    def commit(self, vtl: int) -> int:
        """Apply ``vtl``'s staged updates and derive its VMCS; return the VMCS writes counted."""
        state = self.vtls[vtl]
        if not state.staged_updates:
            return 0
        regs = state.regs
        if self.shared.staged:
            self.shared.commit()
        vmcs = state.vmcs
        writes = 0
        mode = False
        staged = regs.staged
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
                if name in MODE_REGISTERS:
                    mode = True
                    continue
                field = PLAIN_FIELDS.get(name)
                if field is not None:
                    if vmcs[field] != value:
                        vmcs[field] = value
                        writes += 1
                    continue
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
        state.vmcs_writes += writes
        state.commits += 1
        state.staged_updates = 0
        return writes

    def commit_all(self) -> int:
        """Commit every VTL that has staged updates."""
        return self.commit(Vtl.VTL0) + self.commit(Vtl.VTL1)

    def tdx_state(self, vtl: int) -> TdxL2State:
        """The committed derived state of ``vtl`` (call ``commit`` first to include staging)."""
        state = self.vtls[vtl]
        return TdxL2State.from_image(
            state.vtl, state.vmcs.full(), vmcs_writes=state.vmcs_writes, commits=state.commits
        )
