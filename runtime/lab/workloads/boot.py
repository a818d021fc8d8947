"""boot: Guest VSM bring-up of a whole partition, as a Windows loader and secure kernel do it.

DOMAIN section 6 S1 and S2. Firmware takes VP 0 to long mode (EFER.LME, CR4.PAE, CR0.PG);
the VTL0 loader reads the VSM capability and status registers, enables VTL1 for the
partition (with MBEC) and on VP 0, and calls into VTL1. The secure kernel reads its code page
offsets, sets VP 0's secure config and the partition's VSM config (VTL protections on),
prepares VP 0 for secure intercepts (SynIC message page, SINT0, CR0/CR4 and LSTAR intercept
registration), then enables VTL1 on every AP and starts it in VTL0, and returns to VTL0. Each
AP starts in VTL1, where the secure kernel does the same per-VP set-up and returns to VTL0.
A whole partition's bring-up is one operation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from protocol import (
    HV_VP_INDEX_SELF,
    Completed,
    EnablePartitionVtl,
    EnableVpVtl,
    GetVpRegisters,
    HvRegisterName as Reg,
    MovToCr,
    Rdmsr,
    RegisterAssoc,
    SetVpRegisters,
    StartVirtualProcessor,
    SynicSint,
    Vtl,
    VtlCall,
    VtlReturn,
    Wrmsr,
)
from protocol._x86 import CR0_PE, CR0_PG, CR0_WP, CR4_SMAP, CR4_SMEP, EFER_LME, EFER_NXE, EFER_SCE, Msr

from ._checks import expect_success, expect_switch
from ._guest import VTL0_CR0, VTL0_CR4, Unexpected, drive, long_mode_context

if TYPE_CHECKING:
    import random

    from ._guest import Guest, Program

__all__ = ("NAME", "boot_partition", "boot_program")

NAME: Final = "boot"

#: Where the secure kernel and the VTL0 kernel start (any canonical addresses do).
SECURE_KERNEL_ENTRY: Final = 0x40_0000
KERNEL_ENTRY: Final = 0x10_0000
#: VTL1's SynIC message page (enabled) and SINT0 (vector 0x30, auto-EOI, unmasked).
SIMP: Final = 0x7F_F000 | 1
SINT0: Final = SynicSint(vector=0x30, auto_eoi=True).bits
#: What the secure kernel protects: CR0.PE/PG/WP, CR4.SMEP/SMAP, and LSTAR writes.
CR0_MASK: Final = CR0_PE | CR0_PG | CR0_WP
CR4_MASK: Final = CR4_SMEP | CR4_SMAP
CR_INTERCEPT_CONTROL: Final = 0x1 | 0x2 | (1 << 6)  # Cr0Write | Cr4Write | MsrLstarWrite
#: VsmPartitionConfig: VTL protections on, default VTL0 access RWX (0xF).
VSM_PARTITION_CONFIG: Final = 0x1F


def _set(*pairs: tuple[int, int]) -> SetVpRegisters:
    return SetVpRegisters(registers=[RegisterAssoc(name=name, value=value) for name, value in pairs])


def secure_kernel_vp_setup(guest: Guest) -> Program[None]:
    """VTL1 on one VP: MBEC secure config, SynIC for intercept messages, intercept registration."""
    expect_success((yield guest, _set((Reg.VSM_VP_SECURE_CONFIG_VTL0, 1))), "VsmVpSecureConfigVtl0")
    yield guest, Wrmsr(msr=Msr.HV_SCONTROL, value=1)
    yield guest, Wrmsr(msr=Msr.HV_SIMP, value=SIMP)
    yield guest, Wrmsr(msr=Msr.HV_SINT0, value=SINT0)
    registration = _set(
        (Reg.CR_INTERCEPT_CR0_MASK, CR0_MASK),
        (Reg.CR_INTERCEPT_CR4_MASK, CR4_MASK),
        (Reg.CR_INTERCEPT_CONTROL, CR_INTERCEPT_CONTROL),
    )
    expect_success((yield guest, registration), "CR intercept registration")


def kernel_start(guest: Guest) -> Program[None]:
    """The VTL0 kernel runs on the VP: its APIC set-up reads APIC_BASE (an exit)."""
    outcome = yield guest, Rdmsr(msr=Msr.APIC_BASE)
    if type(outcome) is not Completed:
        msg = f"Rdmsr(APIC_BASE) on vp {guest.vp_index}: {outcome!r}"
        raise Unexpected(msg)


def boot_program(guests: list[Guest], rng: random.Random) -> Program[None]:
    """Bring up Guest VSM on every VP of one partition (``guests[i]`` drives VP i)."""
    del rng  # bring-up is the same every time
    bsp = guests[0]
    # Firmware: long mode on VP 0 (the exits a real boot takes).
    yield bsp, Wrmsr(msr=Msr.EFER, value=EFER_LME | EFER_NXE | EFER_SCE)
    yield bsp, MovToCr(cr=4, value=VTL0_CR4)
    yield bsp, MovToCr(cr=0, value=VTL0_CR0)
    # VTL0 loader.
    status: list[int] = [Reg.VSM_CAPABILITIES, Reg.VSM_PARTITION_STATUS, Reg.VSM_VP_STATUS]
    expect_success((yield bsp, GetVpRegisters(names=status)), "VSM status")
    enable_partition = EnablePartitionVtl(target_vtl=Vtl.VTL1, enable_mbec=True)
    expect_success((yield bsp, enable_partition), "EnablePartitionVtl")
    context = long_mode_context(SECURE_KERNEL_ENTRY)
    enable = EnableVpVtl(vp_index=HV_VP_INDEX_SELF, target_vtl=Vtl.VTL1, context=context)
    expect_success((yield bsp, enable), "EnableVpVtl(self)")
    expect_switch((yield bsp, VtlCall()), Vtl.VTL1, "VtlCall")
    # Secure kernel on VP 0.
    names: list[int] = [Reg.VSM_CODE_PAGE_OFFSETS, Reg.VSM_VP_STATUS]
    expect_success((yield bsp, GetVpRegisters(names=names)), "VsmCodePageOffsets")
    config = _set((Reg.VSM_PARTITION_CONFIG, VSM_PARTITION_CONFIG))
    expect_success((yield bsp, config), "VsmPartitionConfig")
    yield from secure_kernel_vp_setup(bsp)
    for ap in guests[1:]:
        index = ap.vp_index
        context = long_mode_context(SECURE_KERNEL_ENTRY, rsp=0x8000 + 0x1000 * index)
        enable = EnableVpVtl(vp_index=index, target_vtl=Vtl.VTL1, context=context)
        expect_success((yield bsp, enable), f"EnableVpVtl({index})")
        start = StartVirtualProcessor(
            vp_index=index, target_vtl=Vtl.VTL0, context=long_mode_context(KERNEL_ENTRY, rsp=0x8000)
        )
        expect_success((yield bsp, start), f"StartVirtualProcessor({index})")
    expect_switch((yield bsp, VtlReturn(fast=True)), Vtl.VTL0, "VtlReturn")
    yield from kernel_start(bsp)
    # Each AP runs VTL1 first: the secure kernel sets it up and returns to VTL0.
    for ap in guests[1:]:
        if ap.vp.active_vtl != Vtl.VTL1:
            msg = f"vp {ap.vp_index} did not start in VTL1"
            raise Unexpected(msg)
        yield from secure_kernel_vp_setup(ap)
        expect_switch((yield ap, VtlReturn(fast=True)), Vtl.VTL0, f"VtlReturn on vp {ap.vp_index}")
        yield from kernel_start(ap)


async def boot_partition(guests: list[Guest], rng: random.Random) -> None:
    """``boot_program`` driven through the VPs' mailboxes (for callers outside an experiment)."""
    await drive(boot_program(guests, rng))
