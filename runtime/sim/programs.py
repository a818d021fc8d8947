"""Seeded guest programs: what the guest on each VP does next, drawn from the whole action space.

A program looks at its VP's active VTL and plays that VTL's role: VTL0 runs kernel code that
exits (MSRs, control registers, descriptor tables, memory, XSETBV) and calls VTL1; VTL1 is a
secure kernel that configures VTL0 (SetVpRegisters, protections, intercept controls, pending
events), handles intercepts and returns. Either role sometimes does what a guest must not
(a VTL call with input, a hypercall from the wrong VTL, out-of-range values, a raw hypercall
code) so refusals are exercised too. Everything comes from the seed's ``random.Random``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from protocol import (
    AccessKind,
    EnablePartitionVtl,
    EnableVpVtl,
    GetVpRegisters,
    HvRegisterName as Reg,
    Hypercall,
    LoadTableRegister,
    MemoryAccess,
    ModifyVtlProtectionMask,
    MovToCr,
    Rdmsr,
    RegisterAssoc,
    SetVpRegisters,
    StartVirtualProcessor,
    VtlCall,
    VtlReturn,
    WriteVtlControl,
    Wrmsr,
    Xsetbv,
)
from protocol._x86 import CR0_ET, CR0_PE, CR0_PG, CR0_WP, CR4_PAE, CR4_SMEP, Msr

from ..testing import LONG_MODE_CR0, LONG_MODE_CR4, long_mode_context
from .history import TRACKED, TRACKED_MSRS

if TYPE_CHECKING:
    import random

    from protocol import Action, InterceptMessage

__all__ = ("PROTECTED_GPNS", "vtl0_action", "vtl1_action", "intercept_reply")

#: Guest pages the programs protect and touch (a few, so accesses hit protections often).
PROTECTED_GPNS: Final = (0x10, 0x11, 0x12, 0x200)
_MSRS: Final = (*TRACKED_MSRS, Msr.EFER, Msr.KERNEL_GS_BASE, Msr.TSC_AUX, Msr.PAT, Msr.SFMASK, 0x1234)
_OTHER_REGS: Final = (Reg.RSP, Reg.RIP, Reg.CR0, Reg.CR4, Reg.EFER, Reg.RFLAGS, Reg.SFMASK, Reg.PAT)
_CR0_VALUES: Final = (
    LONG_MODE_CR0,
    LONG_MODE_CR0 & ~CR0_WP,
    CR0_PE | CR0_ET,
    CR0_PG | CR0_ET,
    LONG_MODE_CR0 | 1 << 40,
)
_CR4_VALUES: Final = (LONG_MODE_CR4, LONG_MODE_CR4 | CR4_SMEP, 0, 1 << 31)


def _value(rng: random.Random) -> int:
    """A register value: canonical addresses mostly, sometimes not (a #GP or InvalidRegisterValue)."""
    roll = rng.random()
    if roll < 0.7:
        return rng.randrange(1 << 47) & ~0xF
    if roll < 0.9:
        return (0xFFFF << 48) | rng.randrange(1 << 47)
    return rng.randrange(1 << 64)


def vtl0_action(rng: random.Random, vp_count: int) -> Action:
    """VTL0's next action: mostly what a kernel does, sometimes what it must not."""
    roll = rng.random()
    if roll < 0.20:
        msr = rng.choice(tuple(TRACKED_MSRS))
        return Wrmsr(msr=msr, value=_value(rng))
    if roll < 0.35:
        return Rdmsr(msr=rng.choice(_MSRS))
    if roll < 0.45:
        # A kernel's values, now and then a breaking one.
        if rng.random() < 0.6:
            return MovToCr(cr=0, value=_register_value(rng, Reg.CR0))
        return MovToCr(cr=4, value=_register_value(rng, Reg.CR4))
    if roll < 0.50:
        return LoadTableRegister(
            which=rng.choice(("gdtr", "idtr", "ldtr", "tr")), value=rng.randrange(1 << 80)
        )
    if roll < 0.58:
        gpn = rng.choice(PROTECTED_GPNS) if rng.random() < 0.7 else rng.randrange(1 << 20)
        return MemoryAccess(gpa=gpn << 12 | rng.randrange(4096), kind=rng.choice(tuple(AccessKind)))
    if roll < 0.72:
        return VtlCall() if rng.random() < 0.9 else VtlCall(input=rng.randrange(1, 8))
    if roll < 0.77:
        return Xsetbv(value=rng.choice((0x1, 0x3, 0x7, 0x2)))
    if roll < 0.85:
        names = rng.sample((*TRACKED, *_OTHER_REGS, Reg.VSM_VP_STATUS, Reg.VSM_PARTITION_STATUS), 3)
        return GetVpRegisters(names=names, target_vtl=rng.choice((None, None, 1)))
    if roll < 0.90:  # VTL0 may not set its own architectural registers this way: refused
        return SetVpRegisters(registers=[RegisterAssoc(name=rng.choice(TRACKED), value=_value(rng))])
    if roll < 0.93:
        return WriteVtlControl(return_rax=rng.randrange(1 << 16), return_rcx=rng.randrange(1 << 16))
    if roll < 0.96:
        return Hypercall(code=rng.choice((0x0002, 0x0003, 0x0008, 0x00FF, 0xFFFF)))
    if roll < 0.98:
        return EnablePartitionVtl(target_vtl=rng.choice((1, 2, 3)))
    return StartVirtualProcessor(
        vp_index=rng.randrange(vp_count + 1), target_vtl=0, context=long_mode_context()
    )


def vtl1_action(rng: random.Random, vp_count: int) -> Action:
    """VTL1's next action: a secure kernel configuring VTL0, or leaving (VtlReturn)."""
    roll = rng.random()
    if roll < 0.25:
        count = rng.randrange(1, 4)
        names = [rng.choice((*TRACKED, *TRACKED, rng.choice(_OTHER_REGS))) for _ in range(count)]
        registers = [RegisterAssoc(name=name, value=_register_value(rng, name)) for name in names]
        return SetVpRegisters(registers=registers, target_vtl=rng.choice((0, 0, 0, None)))
    if roll < 0.35:
        names = rng.sample((*TRACKED, Reg.CR0, Reg.EFER, Reg.RIP), 3)
        return GetVpRegisters(names=names, target_vtl=rng.choice((0, None)))
    if roll < 0.45:
        msr = rng.choice(tuple(TRACKED_MSRS))
        return Wrmsr(msr=msr, value=_value(rng)) if rng.random() < 0.6 else Rdmsr(msr=msr)
    if roll < 0.52:
        gpns = rng.sample(PROTECTED_GPNS, rng.randrange(1, 3))
        return ModifyVtlProtectionMask(gpns=gpns, map_flags=rng.choice((0x1, 0x3, 0x7, 0xF, 0x5, 0x10)))
    if roll < 0.57:
        control = rng.choice((0, 0x1, 0x2, 0x1 | 0x40, 0x1 | 1 << 15))
        return SetVpRegisters(
            registers=[
                RegisterAssoc(name=Reg.CR_INTERCEPT_CR0_MASK, value=rng.choice((CR0_WP, CR0_PG | CR0_PE, 0))),
                RegisterAssoc(name=Reg.CR_INTERCEPT_CR4_MASK, value=rng.choice((CR4_SMEP, CR4_PAE, 0))),
                RegisterAssoc(name=Reg.CR_INTERCEPT_CONTROL, value=control),
            ]
        )
    if roll < 0.60:
        event = 1 | rng.choice((13, 14, 6)) << 16 | 1 << 8
        return SetVpRegisters(registers=[RegisterAssoc(name=Reg.PENDING_EVENT0, value=event)], target_vtl=0)
    if roll < 0.64:
        return WriteVtlControl(return_rax=rng.randrange(1 << 32), return_rcx=rng.randrange(1 << 32))
    if roll < 0.67:
        return Wrmsr(msr=Msr.HV_EOM, value=0)
    if roll < 0.69:
        target = rng.randrange(vp_count + 1)
        if rng.random() < 0.5:
            return EnableVpVtl(vp_index=target, target_vtl=1, context=long_mode_context(0x40_0000))
        return StartVirtualProcessor(
            vp_index=target, target_vtl=rng.choice((0, 1)), context=long_mode_context()
        )
    if roll < 0.71:
        return VtlCall()  # VTL1 cannot call upward: #UD
    return VtlReturn(fast=rng.random() < 0.7)


#: The value a 64-bit kernel keeps in each of the other registers VTL1 may set for VTL0.
_KERNEL_VALUES: Final[dict[int, int]] = {
    Reg.CR0: LONG_MODE_CR0,
    Reg.CR4: LONG_MODE_CR4,
    Reg.EFER: 0xD01,  # LME | LMA | NXE | SCE
    Reg.RFLAGS: 0x202,
    Reg.PAT: 0x0007_0406_0007_0406,
}
#: How often VTL1 writes VTL0 a value that breaks its next VM entry (a fatal condition, 7.2):
#: now and then, so fatal paths are exercised without ending most partitions.
_BREAKING: Final = 0.02


def _register_value(rng: random.Random, name: int) -> int:
    if name == Reg.RIP:
        return 0x1000 + rng.randrange(1 << 20)
    if name in _KERNEL_VALUES and rng.random() >= _BREAKING:
        kernel = _KERNEL_VALUES[name]
        if name == Reg.CR0 and rng.random() < 0.3:
            return kernel & ~CR0_WP  # what an intercept handler toggles
        if name == Reg.RFLAGS and rng.random() < 0.5:
            return 0x2
        return kernel
    if name == Reg.CR0:
        return rng.choice(_CR0_VALUES)
    if name == Reg.CR4:
        return rng.choice(_CR4_VALUES)
    if name == Reg.EFER:
        return rng.choice((0xD01, 0x901, 0x800, 0x1_0000))
    return _value(rng)


#: Control register values a secure kernel applies for VTL0 when it emulates an intercepted write.
_EMULATED: Final = frozenset(
    {LONG_MODE_CR0, LONG_MODE_CR0 & ~CR0_WP, LONG_MODE_CR4, LONG_MODE_CR4 | CR4_SMEP}
)


def intercept_reply(rng: random.Random, message: InterceptMessage) -> list[Action]:
    """What VTL1 does about an intercept: maybe emulate the write, free the slot, return."""
    actions: list[Action] = []
    sane = message.value in _EMULATED or rng.random() < _BREAKING  # a careful secure kernel
    if message.register_name is not None and message.value is not None and sane and rng.random() < 0.5:
        actions.append(
            SetVpRegisters(
                registers=[
                    RegisterAssoc(name=message.register_name, value=message.value),
                    RegisterAssoc(name=Reg.RIP, value=message.rip + message.instruction_length),
                ],
                target_vtl=0,
            )
        )
    elif message.msr is not None and message.msr in TRACKED_MSRS and rng.random() < 0.5:
        value = (message.rdx or 0) << 32 | (message.rax or 0) & 0xFFFF_FFFF
        actions.append(
            SetVpRegisters(
                registers=[
                    RegisterAssoc(name=TRACKED_MSRS[message.msr], value=value),
                    RegisterAssoc(name=Reg.RIP, value=message.rip + message.instruction_length),
                ],
                target_vtl=0,
            )
        )
    actions.append(Wrmsr(msr=Msr.HV_EOM, value=0))
    actions.append(VtlReturn(fast=True))
    return actions
