"""The per-path TDCALL table (DOMAIN 7.1): pinned counts, and the README holds exactly it."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from runtime.lab.tdcall_paths import PATHS, measure_paths, render_markdown

README: Final = Path(__file__).resolve().parents[3] / "README.md"
BEGIN: Final = "<!-- tdcall-paths:begin -->"
END: Final = "<!-- tdcall-paths:end -->"

#: (eager RD, WR), (batched RD, WR) per path. Eager is OpenHCL's pattern (DOMAIN 7.1): 42 + 40
#: for the registers() group plus one WR per change (CR0/CR4 guest-owned bits, EFER, LMA flip),
#: 3 + 3 for the SYSENTER fields of virtual_msrs, 39 RD for registers(), 43 + 42 (+ changes) for
#: a context load. Batched reads nothing and writes the VMCS fields that changed.
EXPECTED: Final[dict[str, tuple[tuple[int, int], tuple[int, int]]]] = {
    "SetVpRegisters(Rip) from VTL1": ((42, 40), (0, 0)),
    "SetVpRegisters(Cr0: +PG, long mode)": ((42, 42), (0, 4)),
    "SetVpRegisters(Efer: LME off)": ((42, 41), (0, 1)),
    "SetVpRegisters(Cr8)": ((42, 40), (0, 0)),
    "SetVpRegisters(Lstar)": ((3, 3), (0, 0)),
    "SetVpRegisters(SysenterEip)": ((3, 3), (0, 1)),
    "SetVpRegisters(Dr7)": ((1, 1), (0, 1)),
    "SetVpRegisters(Pat)": ((0, 1), (0, 1)),
    "SetVpRegisters(TscAux)": ((0, 0), (0, 0)),
    "SetVpRegisters(CrInterceptControl), Cr0Mask = WP": ((0, 9), (0, 1)),
    "GetVpRegisters(Cr0)": ((39, 0), (0, 0)),
    "GetVpRegisters(Lstar)": ((3, 0), (0, 0)),
    "GetVpRegisters(Pat)": ((1, 0), (0, 0)),
    "VtlReturn, normal (RAX/RCX from the assist page)": ((42, 40), (0, 0)),
    "VtlReturn, fast": ((0, 0), (0, 0)),
    "VtlCall": ((0, 0), (0, 0)),
    # 40 + CR0, CR4 and EFER changed from reset, + set_pat + set_activity; 33 fields differ.
    "EnableVpVtl context load (VTL1 of VP 1)": ((43, 45), (0, 33)),
    "StartVirtualProcessor context load (VTL0 of VP 2)": ((43, 45), (0, 33)),
    # VirtualRegister::write (1 RD, physical + shadow WR), update_execution_mode (1 RD, EFER
    # for the LMA flip, entry controls); batched: GUEST_CR0, read shadow, GUEST_EFER, controls.
    "MOV to CR0 exit (PG on: long mode)": ((2, 4), (0, 4)),
    "MOV to CR0 exit, Cr0Write armed, not intercepted": ((3, 4), (0, 4)),
    "MOV to CR0 exit, intercepted": ((1, 0), (0, 0)),
    "MOV to CR4 without exit (guest-owned PGE)": ((0, 0), (0, 0)),
    "WRMSR EFER exit (LME off)": ((1, 2), (0, 1)),
    "WRMSR SYSENTER_CS exit": ((0, 1), (0, 1)),
    "WRMSR LSTAR exit": ((0, 0), (0, 0)),
    "RDMSR PAT exit": ((1, 0), (0, 0)),
    "RDMSR APIC_BASE exit (RIP advance)": ((0, 0), (0, 0)),
    "XSETBV exit": ((1, 0), (0, 0)),
}


async def test_every_path_counts_what_openhcl_issues() -> None:
    """Both policies, both backends: the exact TDG.VP.RD/WR of each path, and the README table."""
    rows = await measure_paths()
    assert [row.path for row in rows] == [path.name for path in PATHS] == list(EXPECTED)
    assert {row.path: (row.eager, row.batched) for row in rows} == EXPECTED
    text = README.read_text()
    assert BEGIN in text, "README.md lacks the per-path TDCALL table markers"
    assert END in text
    table = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    computed = render_markdown(rows)
    assert table == computed, f"README's per-path TDCALL table is stale; it should read:\n{computed}"
