"""TDG.VP.RD / TDG.VP.WR per path, OpenHCL (eager) against batched: the README's table (DOMAIN 7.1).

Each path runs on a fresh partition under each commit policy: VP 0 with Guest VSM, VTL1 in
long mode, VTL0 in protected mode with CR4.PAE and EFER.LME (paging off), then one path. The
counts are the growth of the path's VTL counters (``TdxL2State.vmcs_reads``/``vmcs_writes``)
from an inspection before it to one after it; an inspection commits, so under batched they
include the write-back the path causes. tests/runtime/lab/test_tdcall_paths.py pins the counts
and checks that the README holds exactly this table (its failure message prints the table).
"""

from __future__ import annotations

from typing import Final

import msgspec

from protocol import (
    HV_VP_INDEX_SELF,
    Action,
    EnablePartitionVtl,
    EnableVpVtl,
    GetVpRegisters,
    HvRegisterName as Reg,
    MovToCr,
    Rdmsr,
    RegisterAssoc,
    SetVpRegisters,
    StartVirtualProcessor,
    Vtl,
    VtlCall,
    VtlReturn,
    WriteVtlControl,
    Wrmsr,
    Xsetbv,
)
from protocol._x86 import (
    CR0_ET,
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_OSXSAVE,
    CR4_PAE,
    CR4_PGE,
    EFER_LME,
    EFER_NXE,
    Msr,
)

from .._host import open_runtime
from ..testing import long_mode_context

__all__ = ("PATHS", "Path", "PathCounts", "measure_paths", "render_markdown")

#: VTL0 before each path: protected mode, CR4.PAE (and OSXSAVE for XSETBV), EFER.LME, no paging.
_VTL0_CR0: Final = CR0_PE | CR0_ET
_VTL0_CR4: Final = CR4_PAE | CR4_OSXSAVE
_VTL0_EFER: Final = EFER_LME | EFER_NXE
#: CrInterceptControl with Cr0Write only.
_CR0_WRITE: Final = 0x1


class PathCounts(msgspec.Struct, frozen=True, kw_only=True):
    """One path: what it is, where OpenHCL does it, and the counts under both policies."""

    path: str
    source: str
    eager: tuple[int, int]
    batched: tuple[int, int]


def _set(vtl: Vtl | None, *pairs: tuple[int, int]) -> SetVpRegisters:
    return SetVpRegisters(registers=[RegisterAssoc(name=n, value=v) for n, v in pairs], target_vtl=vtl)


def _vtl0(*pairs: tuple[int, int]) -> SetVpRegisters:
    return _set(Vtl.VTL0, *pairs)


class Path(msgspec.Struct, frozen=True):
    """A path: its name, where OpenVMM implements it, the (VP, VTL) whose counters it moves,
    the actions VP 0 runs in VTL1 before it, and the path's own actions (run on VP 0).

    Every path starts in VTL1; ``VtlReturn(fast=True)`` in the setup moves it to VTL0.
    """

    name: str
    source: str
    vtl: Vtl
    setup: tuple[Action, ...]
    actions: tuple[Action, ...]
    vp: int = 0


_TO_VTL0: Final = VtlReturn(fast=True)
PATHS: Final[tuple[Path, ...]] = (
    Path(
        "SetVpRegisters(Rip) from VTL1",
        "HCVM set_vp_register; TDX registers, set_registers",
        Vtl.VTL0,
        (),
        (_vtl0((Reg.RIP, 0x20_0000)),),
    ),
    Path(
        "SetVpRegisters(Cr0: +PG, long mode)",
        "HCVM set_vp_register; TDX set_registers, write_cr0, update_execution_mode",
        Vtl.VTL0,
        (),
        (_vtl0((Reg.CR0, _VTL0_CR0 | CR0_PG)),),
    ),
    Path(
        "SetVpRegisters(Efer: LME off)",
        "HCVM set_vp_register; TDX set_registers, write_efer",
        Vtl.VTL0,
        (),
        (_vtl0((Reg.EFER, EFER_NXE)),),
    ),
    Path(
        "SetVpRegisters(Cr8)",
        "HCVM set_vp_register; TDX set_registers (APIC page TPR)",
        Vtl.VTL0,
        (),
        (_vtl0((Reg.CR8, 0x5)),),
    ),
    Path(
        "SetVpRegisters(Lstar)",
        "HCVM set_vp_register; TDX virtual_msrs, set_virtual_msrs",
        Vtl.VTL0,
        (),
        (_vtl0((Reg.LSTAR, 0xFFFF_F800_0000_1000)),),
    ),
    Path(
        "SetVpRegisters(SysenterEip)",
        "HCVM set_vp_register; TDX virtual_msrs, set_virtual_msrs",
        Vtl.VTL0,
        (),
        (_vtl0((Reg.SYSENTER_EIP, 0xFFFF_F800_0000_3000)),),
    ),
    Path(
        "SetVpRegisters(Dr7)",
        "HCVM set_vp_register; TDX debug_regs, set_debug_regs",
        Vtl.VTL0,
        (),
        (_vtl0((Reg.DR7, 0x401)),),
    ),
    Path(
        "SetVpRegisters(Pat)",
        "HCVM set_vp_register; TDX set_pat",
        Vtl.VTL0,
        (),
        (_vtl0((Reg.PAT, 0x0007_0406_0007_0401)),),
    ),
    Path(
        "SetVpRegisters(TscAux)",
        "HCVM set_vp_register; TDX set_tsc_aux (TdxPrivateRegs)",
        Vtl.VTL0,
        (),
        (_vtl0((Reg.TSC_AUX, 7)),),
    ),
    Path(
        "SetVpRegisters(CrInterceptControl), Cr0Mask = WP",
        "HCVM set_vtl1_cr_intercept_control; TDX cr_intercept_registration",
        Vtl.VTL0,
        (_set(None, (Reg.CR_INTERCEPT_CR0_MASK, CR0_WP)),),
        (_set(None, (Reg.CR_INTERCEPT_CONTROL, _CR0_WRITE)),),
    ),
    Path(
        "GetVpRegisters(Cr0)",
        "HCVM get_vp_register; TDX registers",
        Vtl.VTL0,
        (),
        (GetVpRegisters(names=[Reg.CR0], target_vtl=Vtl.VTL0),),
    ),
    Path(
        "GetVpRegisters(Lstar)",
        "HCVM get_vp_register; TDX virtual_msrs",
        Vtl.VTL0,
        (),
        (GetVpRegisters(names=[Reg.LSTAR], target_vtl=Vtl.VTL0),),
    ),
    Path(
        "GetVpRegisters(Pat)",
        "HCVM get_vp_register; TDX pat",
        Vtl.VTL0,
        (),
        (GetVpRegisters(names=[Reg.PAT], target_vtl=Vtl.VTL0),),
    ),
    Path(
        "VtlReturn, normal (RAX/RCX from the assist page)",
        "HCVM vtl_return; TDX registers, set_registers",
        Vtl.VTL0,
        (WriteVtlControl(return_rax=1, return_rcx=2),),
        (VtlReturn(),),
    ),
    Path(
        "VtlReturn, fast", "HCVM vtl_return (fast: no register access)", Vtl.VTL0, (), (VtlReturn(fast=True),)
    ),
    Path(
        "VtlCall",
        "HCVM raise_vtl; TDX switch_vtl (exit_vtl only)",
        Vtl.VTL0,
        (_TO_VTL0,),
        (VtlCall(),),
    ),
    Path(
        "EnableVpVtl context load (VTL1 of VP 1)",
        "HCVM hcvm_handle_vp_start_enable_vtl; HV1 set_x86_vp_context",
        Vtl.VTL1,
        (),
        (EnableVpVtl(vp_index=1, target_vtl=Vtl.VTL1, context=long_mode_context(0x40_0000)),),
        vp=1,
    ),
    Path(
        "StartVirtualProcessor context load (VTL0 of VP 2)",
        "HCVM hcvm_handle_vp_start_enable_vtl; HV1 set_x86_vp_context",
        Vtl.VTL0,
        (),
        (StartVirtualProcessor(vp_index=2, target_vtl=Vtl.VTL0, context=long_mode_context(0x10_0000)),),
        vp=2,
    ),
    Path(
        "MOV to CR0 exit (PG on: long mode)",
        "TDX handle_vmx_exit CR_ACCESS; VirtualRegister::write; update_execution_mode",
        Vtl.VTL0,
        (_TO_VTL0,),
        (MovToCr(cr=0, value=_VTL0_CR0 | CR0_PG),),
    ),
    Path(
        "MOV to CR0 exit, Cr0Write armed, not intercepted",
        "HCVM cvm_is_protected_register_write; TDX CR_ACCESS arm",
        Vtl.VTL0,
        (_set(None, (Reg.CR_INTERCEPT_CR0_MASK, CR0_WP)), _set(None, (Reg.CR_INTERCEPT_CONTROL, _CR0_WRITE))),
        (_TO_VTL0, MovToCr(cr=0, value=_VTL0_CR0 | CR0_PG)),
    ),
    Path(
        "MOV to CR0 exit, intercepted",
        "HCVM cvm_is_protected_register_write, cvm_try_protect_secure_register_write",
        Vtl.VTL0,
        (_set(None, (Reg.CR_INTERCEPT_CR0_MASK, CR0_PG)), _set(None, (Reg.CR_INTERCEPT_CONTROL, _CR0_WRITE))),
        (_TO_VTL0, MovToCr(cr=0, value=_VTL0_CR0 | CR0_PG)),
    ),
    Path(
        "MOV to CR4 without exit (guest-owned PGE)",
        "processor (no VM exit: CR4 guest/host mask)",
        Vtl.VTL0,
        (_TO_VTL0,),
        (MovToCr(cr=4, value=_VTL0_CR4 | CR4_PGE),),
    ),
    Path(
        "WRMSR EFER exit (LME off)",
        "TDX write_msr_tdx; write_efer; update_execution_mode",
        Vtl.VTL0,
        (_TO_VTL0,),
        (Wrmsr(msr=Msr.EFER, value=EFER_NXE),),
    ),
    Path(
        "WRMSR SYSENTER_CS exit",
        "TDX write_msr_tdx",
        Vtl.VTL0,
        (_TO_VTL0,),
        (Wrmsr(msr=Msr.SYSENTER_CS, value=0x10),),
    ),
    Path(
        "WRMSR LSTAR exit",
        "TDX write_msr_tdx (TdxPrivateRegs)",
        Vtl.VTL0,
        (_TO_VTL0,),
        (Wrmsr(msr=Msr.LSTAR, value=0xFFFF_F800_0000_2000),),
    ),
    Path("RDMSR PAT exit", "TDX read_msr_tdx", Vtl.VTL0, (_TO_VTL0,), (Rdmsr(msr=Msr.PAT),)),
    Path(
        "RDMSR APIC_BASE exit (RIP advance)",
        "TDX handle_vmx_exit MSR_READ; advance_to_next_instruction",
        Vtl.VTL0,
        (_TO_VTL0,),
        (Rdmsr(msr=Msr.APIC_BASE),),
    ),
    Path("XSETBV exit", "TDX handle_vmx_exit XSETBV", Vtl.VTL0, (_TO_VTL0,), (Xsetbv(value=0x3),)),
)


async def _measure(policy: str, path: Path) -> tuple[int, int]:
    async with open_runtime(seed=1) as rt:
        part = await rt.create_partition(vp_count=4, commit_policy=policy)
        vp = part.vp(0)
        for action in (
            EnablePartitionVtl(target_vtl=Vtl.VTL1),
            EnableVpVtl(vp_index=HV_VP_INDEX_SELF, target_vtl=Vtl.VTL1, context=long_mode_context(0x40_0000)),
            VtlCall(),
            _vtl0((Reg.CR4, _VTL0_CR4), (Reg.CR0, _VTL0_CR0), (Reg.EFER, _VTL0_EFER)),
            *path.setup,
        ):
            await vp.execute(action)
        target = part.vp(path.vp)
        before = await target.tdx_state(path.vtl)  # commits: the setup's write-back is not counted
        for action in path.actions:
            await vp.execute(action)
        after = await target.tdx_state(path.vtl)  # commits (and applies a context load first)
        return after.vmcs_reads - before.vmcs_reads, after.vmcs_writes - before.vmcs_writes


async def measure_paths(paths: tuple[Path, ...] = PATHS) -> list[PathCounts]:
    """Every path's counts under both policies (fresh partitions, so each stands alone)."""
    rows = []
    for path in paths:
        counts = {policy: await _measure(policy, path) for policy in ("eager", "batched")}
        rows.append(
            PathCounts(path=path.name, source=path.source, eager=counts["eager"], batched=counts["batched"])
        )
    return rows


def render_markdown(rows: list[PathCounts]) -> str:
    """The rows as the README's Markdown table."""
    lines = [
        "| path | OpenHCL (eager) RD | WR | batched RD | WR | where OpenHCL does it (DOMAIN abbreviations) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    lines.extend(
        f"| {r.path} | {r.eager[0]} | {r.eager[1]} | {r.batched[0]} | {r.batched[1]} | {r.source} |"
        for r in rows
    )
    return "\n".join(lines)
