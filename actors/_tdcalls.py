"""OpenHCL's TDCALL pattern, path by path: the TDG.VP.RD and TDG.VP.WR each path issues (DOMAIN 7.1).

Every ``read_vmcs*`` / ``write_vmcs*`` / ``set_msr_bit`` of OpenHCL is one TDG.VP.RD or TDG.VP.WR
(HCL ``ioctl/tdx.rs`` ``read_vmcs``, ``write_vmcs``, ``write_msr_bitmap``); there is no cache.
RIP, RSP, RFLAGS (``TdxL2EnterGuestState``), the GPRs, CR2 (the kernel run page), CR8 (the APIC
page TPR), EFER (OpenHCL's cache, mirrored by writes only), the private MSRs (``TdxPrivateRegs``),
DR0-DR3/DR6 and XFEM (hypervisor registers) cost none. The numbers below are read from the
TDX backing of ``openhcl/virt_mshv_vtl/src/processor/tdx/mod.rs`` (TDX) and from
``hardware_cvm/mod.rs`` (HCVM) at openvmm ``1488a37b7``.

The eager policy charges these at the path (``VpState.count_tdcalls``); the batched policy
charges nothing here and counts one TDG.VP.WR per VMCS field whose value changed at commit.
"""

from __future__ import annotations

from typing import Final

from protocol import HvRegisterName as Reg
from protocol._x86 import CR0_ET, CR0_GUEST_OWNED, CR0_PG, CR4_GUEST_OWNED, EFER_LMA, EFER_LME

__all__ = (
    "CONTEXT_LOAD",
    "CR_INTERCEPT_REGISTRATION",
    "GET_REGISTERS_GROUP",
    "REGISTERS",
    "SET_REGISTERS",
    "SET_REGISTERS_GROUP",
    "get_register_tdcalls",
    "mov_to_cr_tdcalls",
    "set_register_tdcalls",
    "set_registers_writes",
    "update_execution_mode_writes",
    "wrmsr_efer_tdcalls",
)

_SEGMENTS: Final = 8  # CS DS ES FS GS SS TR LDTR: selector, base, limit, attributes each
_TABLES: Final = 2  # GDTR, IDTR: base, limit each

#: TDX ``registers()``: every segment (4 RD) and table (2 RD), CR0 and CR4 through
#: ``VirtualRegister::read`` (the physical field), CR3; EFER comes from the cache.
REGISTERS: Final = (_SEGMENTS * 4 + _TABLES * 2 + 3, 0)
#: TDX ``set_registers()`` before its value-dependent writes: ``write_segment`` x 8 (4 WR),
#: ``write_table_register`` x 2 (2 WR), ``write_cr0``/``write_cr4`` (1 RD of the physical field,
#: 1 WR of the read shadow), CR3 (1 WR), ``update_execution_mode`` (1 RD of CR0, 1 WR of the
#: VM-entry controls, always). ``set_registers_writes`` adds the rest.
SET_REGISTERS: Final = (3, _SEGMENTS * 4 + _TABLES * 2 + 4)
#: ``hv1_emulator::hypercall::set_x86_vp_context`` (EnableVpVtl/StartVp context load): besides
#: ``registers()`` + ``set_registers()``, ``set_pat`` (1 WR), ``activity`` (1 RD of the
#: interruptibility field) and ``set_activity`` (1 WR of it).
CONTEXT_LOAD: Final = (1, 2)
#: TDX ``cr_intercept_registration``: both CR guest/host masks, the secondary controls (masked
#: write) and ``set_msr_bit`` for S_CET, PL0-PL3_SSP and INTERRUPT_SSP_TABLE_ADDR: 9 WR on VTL0.
CR_INTERCEPT_REGISTRATION: Final = (0, 9)

#: HCVM ``get_vp_register``: names answered from ``registers()`` (39 RD each).
GET_REGISTERS_GROUP: Final = frozenset(
    {
        Reg.EFER,
        Reg.CR0,
        Reg.CR2,
        Reg.CR3,
        Reg.CR4,
        Reg.CR8,
        Reg.ES,
        Reg.CS,
        Reg.SS,
        Reg.DS,
        Reg.FS,
        Reg.GS,
        Reg.TR,
        Reg.LDTR,
        Reg.GDTR,
        Reg.IDTR,
        Reg.RIP,
        Reg.RFLAGS,
        Reg.RSP,
        *(Reg.RAX + i for i in range(16)),
    }
)
#: HCVM ``set_vp_register``: names applied by ``registers()`` + ``set_registers()``.
SET_REGISTERS_GROUP: Final = frozenset(
    {Reg.EFER, Reg.CR0, Reg.CR4, Reg.CR8, Reg.LDTR, Reg.GDTR, Reg.IDTR, Reg.RIP, Reg.RFLAGS, Reg.RSP}
)
#: TDX ``virtual_msrs()``: SYSENTER_CS/EIP/ESP come from the VMCS (3 RD), the rest from
#: ``TdxPrivateRegs``; ``set_virtual_msrs()`` writes the three SYSENTER fields back (3 WR).
_VIRTUAL_MSRS: Final = frozenset(
    {Reg.STAR, Reg.LSTAR, Reg.CSTAR, Reg.SYSENTER_CS, Reg.SYSENTER_EIP, Reg.SYSENTER_ESP, Reg.SFMASK}
)
_REGISTERS_READS: Final = REGISTERS[0]
#: (RD) of one GetVpRegisters element outside the ``registers()`` group: ``virtual_msrs()``,
#: ``debug_regs()`` (DR7 is the only VMCS field), ``pat()``. TscAux, Xfem, SynIC, VSM and
#: intercept registers are not VMCS fields.
_GET_READS: Final[dict[int, int]] = {
    **dict.fromkeys(_VIRTUAL_MSRS | {Reg.KERNEL_GS_BASE}, 3),
    **dict.fromkeys((Reg.DR0, Reg.DR1, Reg.DR2, Reg.DR3, Reg.DR7), 1),
    Reg.PAT: 1,
}
#: (RD, WR) of one SetVpRegisters element outside the group: ``virtual_msrs()`` +
#: ``set_virtual_msrs()``, ``debug_regs()`` + ``set_debug_regs()``, ``set_pat()``.
_SET_TDCALLS: Final[dict[int, tuple[int, int]]] = {
    **dict.fromkeys(_VIRTUAL_MSRS, (3, 3)),
    Reg.DR3: (1, 1),
    Reg.DR7: (1, 1),
    Reg.PAT: (0, 1),
}
_NONE: Final = (0, 0)


def get_register_tdcalls(name: int) -> int:
    """TDG.VP.RD of one successful GetVpRegisters element (HCVM ``get_vp_register``)."""
    if name in GET_REGISTERS_GROUP:
        return _REGISTERS_READS
    return _GET_READS.get(name, 0)


def set_register_tdcalls(name: int) -> tuple[int, int]:
    """(RD, WR) of one applied SetVpRegisters element outside the ``registers()`` group."""
    return _SET_TDCALLS.get(name, _NONE)


def update_execution_mode_writes(efer: int, cr0: int) -> int:
    """WR of TDX ``update_execution_mode`` after ``write_efer(efer)``: EFER if LMA flips, then
    the VM-entry controls (always)."""
    lma = bool(efer & EFER_LME and cr0 & CR0_PG)
    return 1 + (lma != bool(efer & EFER_LMA))


def set_registers_writes(old_cr0: int, old_cr4: int, old_efer: int, cr0: int, cr4: int, efer: int) -> int:
    """WR of one TDX ``set_registers()``: 40, plus one for each of: CR0 guest-owned bits changed
    (``write_cr0`` forces ET), CR4 guest-owned bits changed, EFER differs from the cache, LMA
    flips in ``update_execution_mode``. ``efer`` is the value written, as the caller gave it."""
    cr0 |= CR0_ET
    writes = SET_REGISTERS[1] - 1  # the entry-control write is counted by update_execution_mode
    writes += bool((old_cr0 ^ cr0) & CR0_GUEST_OWNED) + bool((old_cr4 ^ cr4) & CR4_GUEST_OWNED)
    writes += efer != old_efer
    return writes + update_execution_mode_writes(efer, cr0)


def mov_to_cr_tdcalls(cr: int, armed: bool, old: int, new: int, efer: int, cr0: int) -> tuple[int, int]:
    """(RD, WR) of a CR_ACCESS exit that writes CR0 or CR4 (TDX ``handle_vmx_exit``).

    ``armed``: VTL1 registered the write (HCVM ``cvm_is_protected_register_write`` reads the
    current value, 1 RD). Then ``VirtualRegister::write`` (1 RD; 1 WR of the physical field if
    guest-owned bits change; 1 WR of the read shadow) and ``update_execution_mode`` (1 RD, 1 WR
    of the entry controls, 1 more if LMA flips). ``cr0`` is CR0 after the write.
    """
    owned = CR0_GUEST_OWNED if cr == 0 else CR4_GUEST_OWNED
    reads = int(armed) + 2
    writes = bool((old ^ new) & owned) + 1 + update_execution_mode_writes(efer, cr0)
    return reads, writes


def wrmsr_efer_tdcalls(old_efer: int, efer: int, cr0: int) -> tuple[int, int]:
    """(RD, WR) of WRMSR EFER (TDX ``write_msr_tdx``): ``write_efer`` (1 WR if EFER changed),
    then ``update_execution_mode`` (1 RD, 1-2 WR)."""
    return 1, (efer != old_efer) + update_execution_mode_writes(efer, cr0)
