"""Guest actions: the hypercalls and exiting instructions a guest performs on a VP.

An action never names the caller's VTL: it runs in whatever VTL is active on the VP. Defaults
follow API.md (``partition_id=HV_PARTITION_ID_SELF``, ``vp_index=HV_VP_INDEX_SELF``,
``target_vtl=None`` meaning "the caller's VTL", ``rep_start=0``).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Annotated, Final, Literal, TypeAlias

import msgspec

from ._base import U8, U16, U32, U64, U128, Msg, check_width
from ._hv import HV_PARTITION_ID_SELF, HV_VP_INDEX_SELF, HypercallCode

__all__ = (
    "ACTION_HYPERCALL_CODES",
    "MAX_REP_COUNT",
    "AccessKind",
    "Action",
    "ClearMessageSlot",
    "EnablePartitionVtl",
    "EnableVpVtl",
    "GetVpRegisters",
    "Hypercall",
    "InitialVpContext",
    "LoadTableRegister",
    "MemoryAccess",
    "ModifyVtlProtectionMask",
    "MovToCr",
    "Rdmsr",
    "RegisterAssoc",
    "SetVpRegisters",
    "StartVirtualProcessor",
    "VtlCall",
    "VtlReturn",
    "Wrmsr",
    "WriteVtlControl",
    "Xsetbv",
)

#: HvInputVtl's 4-bit value; values above 2 are refused with InvalidParameter by the handler.
InputVtl: TypeAlias = U8


class AccessKind(enum.IntEnum):
    """Kind of a memory access, as in the intercept header's access type."""

    READ = 0
    WRITE = 1
    EXECUTE = 2


_ACCESS_KINDS: frozenset[int] = frozenset(AccessKind)

#: The rep count of a hypercall input is 12 bits: no rep hypercall carries more elements.
MAX_REP_COUNT: Final = 0xFFF
_Reps = msgspec.Meta(max_length=MAX_REP_COUNT)


def _check_input_vtl(owner: str, target_vtl: int | None) -> None:
    if target_vtl is not None:
        check_width(owner, "target_vtl", target_vtl, 4)


class RegisterAssoc(Msg, tag=True, frozen=True, kw_only=True):
    """One element of SetVpRegisters: a register name and a value of up to 128 bits."""

    name: U32
    value: U128 = 0

    def __post_init__(self) -> None:
        check_width("RegisterAssoc", "value", self.value, 128)


class InitialVpContext(Msg, tag=True, frozen=True, kw_only=True):
    """InitialVpContextX64 (224 bytes): segment and table registers are packed 128-bit values."""

    rip: U64 = 0
    rsp: U64 = 0
    rflags: U64 = 0
    cs: U128 = 0
    ds: U128 = 0
    es: U128 = 0
    fs: U128 = 0
    gs: U128 = 0
    ss: U128 = 0
    tr: U128 = 0
    ldtr: U128 = 0
    idtr: U128 = 0
    gdtr: U128 = 0
    efer: U64 = 0
    cr0: U64 = 0
    cr3: U64 = 0
    cr4: U64 = 0
    msr_cr_pat: U64 = 0

    def __post_init__(self) -> None:
        for name in ("rip", "rsp", "rflags", "efer", "cr0", "cr3", "cr4", "msr_cr_pat"):
            check_width("InitialVpContext", name, getattr(self, name), 64)
        for name in ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldtr", "idtr", "gdtr"):
            check_width("InitialVpContext", name, getattr(self, name), 128)


# ---- Hypercalls ---------------------------------------------------------------------------------


class EnablePartitionVtl(Msg, tag=True, frozen=True, kw_only=True):
    """HvCallEnablePartitionVtl (0x000D). ``target_vtl`` is the raw input byte."""

    target_vtl: U8
    enable_mbec: bool = False
    enable_supervisor_shadow_stack: bool = False
    enable_hardware_hvpt: bool = False
    partition_id: U64 = HV_PARTITION_ID_SELF

    def __post_init__(self) -> None:
        check_width("EnablePartitionVtl", "partition_id", self.partition_id, 64)


class EnableVpVtl(Msg, tag=True, frozen=True, kw_only=True):
    """HvCallEnableVpVtl (0x000F): enable VTL1 on a VP with an initial VTL1 context."""

    vp_index: U32
    target_vtl: U8
    context: InitialVpContext
    partition_id: U64 = HV_PARTITION_ID_SELF

    def __post_init__(self) -> None:
        check_width("EnableVpVtl", "partition_id", self.partition_id, 64)


class StartVirtualProcessor(Msg, tag=True, frozen=True, kw_only=True):
    """HvCallStartVirtualProcessor (0x0099): start an AP in a VTL with an initial context."""

    vp_index: U32
    target_vtl: U8
    context: InitialVpContext
    partition_id: U64 = HV_PARTITION_ID_SELF

    def __post_init__(self) -> None:
        check_width("StartVirtualProcessor", "partition_id", self.partition_id, 64)


class GetVpRegisters(Msg, tag=True, frozen=True, kw_only=True):
    """HvCallGetVpRegisters (0x0050, rep): one element per register name."""

    names: Annotated[Sequence[U32], _Reps]  # Sequence, not list: a list[HvRegisterName] must type-check
    partition_id: U64 = HV_PARTITION_ID_SELF
    vp_index: U32 = HV_VP_INDEX_SELF
    target_vtl: InputVtl | None = None
    rep_start: U16 = 0

    def __post_init__(self) -> None:
        check_width("GetVpRegisters", "partition_id", self.partition_id, 64)
        check_width("GetVpRegisters", "rep_start", self.rep_start, 12)
        _check_input_vtl("GetVpRegisters", self.target_vtl)


class SetVpRegisters(Msg, tag=True, frozen=True, kw_only=True):
    """HvCallSetVpRegisters (0x0051, rep): one element per (name, value)."""

    registers: Annotated[list[RegisterAssoc], _Reps]
    partition_id: U64 = HV_PARTITION_ID_SELF
    vp_index: U32 = HV_VP_INDEX_SELF
    target_vtl: InputVtl | None = None
    rep_start: U16 = 0

    def __post_init__(self) -> None:
        check_width("SetVpRegisters", "partition_id", self.partition_id, 64)
        check_width("SetVpRegisters", "rep_start", self.rep_start, 12)
        _check_input_vtl("SetVpRegisters", self.target_vtl)


class ModifyVtlProtectionMask(Msg, tag=True, frozen=True, kw_only=True):
    """HvCallModifyVtlProtectionMask (0x000C, rep): set VTL0's access to guest pages."""

    gpns: Annotated[list[U64], _Reps]
    map_flags: U32
    partition_id: U64 = HV_PARTITION_ID_SELF
    target_vtl: InputVtl | None = None
    rep_start: U16 = 0

    def __post_init__(self) -> None:
        check_width("ModifyVtlProtectionMask", "partition_id", self.partition_id, 64)
        check_width("ModifyVtlProtectionMask", "rep_start", self.rep_start, 12)
        _check_input_vtl("ModifyVtlProtectionMask", self.target_vtl)
        for gpn in self.gpns:
            check_width("ModifyVtlProtectionMask", "gpns[]", gpn, 64)


class VtlCall(Msg, tag=True, frozen=True, kw_only=True):
    """HvCallVtlCall (0x0011): ``input`` is RAX, ``control_flags`` any control bits besides the code."""

    input: U64 = 0
    control_flags: U64 = 0

    def __post_init__(self) -> None:
        check_width("VtlCall", "input", self.input, 64)
        check_width("VtlCall", "control_flags", self.control_flags, 64)


class VtlReturn(Msg, tag=True, frozen=True, kw_only=True):
    """HvCallVtlReturn (0x0012): ``fast`` is input bit 0; ``input`` overrides the whole RAX."""

    fast: bool = False
    control_flags: U64 = 0
    input: U64 | None = None

    def __post_init__(self) -> None:
        check_width("VtlReturn", "control_flags", self.control_flags, 64)
        if self.input is not None:
            check_width("VtlReturn", "input", self.input, 64)

    @property
    def effective_input(self) -> int:
        """The VTL-switch input register: ``input`` if given, else the fast bit."""
        return int(self.fast) if self.input is None else self.input


class WriteVtlControl(Msg, tag=True, frozen=True, kw_only=True):
    """The guest writes its own VP assist page's VTL control block: the VTL-return RAX/RCX.

    A plain memory write, not an exit: VTL1 sets the values a normal VtlReturn loads into
    VTL0's RAX (offset 0x10) and RCX (offset 0x18).
    """

    return_rax: U64 = 0
    return_rcx: U64 = 0

    def __post_init__(self) -> None:
        check_width("WriteVtlControl", "return_rax", self.return_rax, 64)
        check_width("WriteVtlControl", "return_rcx", self.return_rcx, 64)


class ClearMessageSlot(Msg, tag=True, frozen=True, kw_only=True):
    """The guest writes HvMessageTypeNone into the header of its SIMP slot ``sint`` (0-15).

    A plain memory write, not an exit: it frees the slot for the next message (DOMAIN 7.3;
    EOM does not). Outcome ``Completed()``.
    """

    sint: U8 = 0

    def __post_init__(self) -> None:
        if not 0 <= self.sint < 16:
            msg = f"ClearMessageSlot.sint={self.sint!r}: a SynIC has SINTs 0-15"
            raise ValueError(msg)


#: Hypercall codes that have an action of their own (a raw ``Hypercall`` may not use them).
ACTION_HYPERCALL_CODES: Final = {
    HypercallCode.ENABLE_PARTITION_VTL: "EnablePartitionVtl",
    HypercallCode.ENABLE_VP_VTL: "EnableVpVtl",
    HypercallCode.START_VIRTUAL_PROCESSOR: "StartVirtualProcessor",
    HypercallCode.GET_VP_REGISTERS: "GetVpRegisters",
    HypercallCode.SET_VP_REGISTERS: "SetVpRegisters",
    HypercallCode.MODIFY_VTL_PROTECTION_MASK: "ModifyVtlProtectionMask",
    HypercallCode.VTL_CALL: "VtlCall",
    HypercallCode.VTL_RETURN: "VtlReturn",
}


class Hypercall(Msg, tag=True, frozen=True, kw_only=True):
    """A raw hypercall by code, for codes that have no action of their own.

    ``rep_count`` and ``rep_start`` are the 12-bit fields of the hypercall input value.
    """

    code: U16
    rep_count: U16 = 0
    rep_start: U16 = 0
    fast: bool = False

    def __post_init__(self) -> None:
        check_width("Hypercall", "rep_count", self.rep_count, 12)
        check_width("Hypercall", "rep_start", self.rep_start, 12)


def check_raw_hypercall(call: Hypercall) -> None:
    """Raise ValueError when ``call.code`` belongs to a hypercall that has its own action."""
    action = ACTION_HYPERCALL_CODES.get(call.code)  # type: ignore[call-overload]  # any int
    if action is not None:
        name = HypercallCode(call.code).name
        msg = f"Hypercall.code={name}: that hypercall has an action of its own, use {action}"
        raise ValueError(msg)


# ---- Exiting instructions ----------------------------------------------------------------------


class MovToCr(Msg, tag=True, frozen=True, kw_only=True):
    """MOV to CR0 or CR4 (exits to the paravisor on TDX)."""

    cr: Literal[0, 4]
    value: U64

    def __post_init__(self) -> None:
        if self.cr not in (0, 4):
            msg = f"MovToCr.cr={self.cr!r}: only CR0 and CR4 exit to the paravisor (0 or 4)"
            raise ValueError(msg)
        check_width("MovToCr", "value", self.value, 64)


class Wrmsr(Msg, tag=True, frozen=True, kw_only=True):
    """WRMSR: ``value`` is EDX:EAX."""

    msr: U32
    value: U64

    def __post_init__(self) -> None:
        check_width("Wrmsr", "value", self.value, 64)


class Rdmsr(Msg, tag=True, frozen=True, kw_only=True):
    """RDMSR; completes with the value read."""

    msr: U32


class Xsetbv(Msg, tag=True, frozen=True, kw_only=True):
    """XSETBV with ECX = 0: ``value`` is the new XCR0 (XFEM)."""

    value: U64

    def __post_init__(self) -> None:
        check_width("Xsetbv", "value", self.value, 64)


class LoadTableRegister(Msg, tag=True, frozen=True, kw_only=True):
    """LGDT, LIDT, LLDT or LTR with a packed register value."""

    which: Literal["gdtr", "idtr", "ldtr", "tr"]
    value: U128

    def __post_init__(self) -> None:
        if self.which not in ("gdtr", "idtr", "ldtr", "tr"):
            msg = f"LoadTableRegister.which={self.which!r}: expected 'gdtr', 'idtr', 'ldtr' or 'tr'"
            raise ValueError(msg)
        check_width("LoadTableRegister", "value", self.value, 128)


class MemoryAccess(Msg, tag=True, frozen=True, kw_only=True):
    """A guest access to guest-physical memory."""

    gpa: U64
    kind: AccessKind

    def __post_init__(self) -> None:
        if self.kind not in _ACCESS_KINDS:
            msg = f"MemoryAccess.kind={self.kind!r}: expected an AccessKind"
            raise ValueError(msg)
        check_width("MemoryAccess", "gpa", self.gpa, 64)


Action: TypeAlias = (
    EnablePartitionVtl
    | EnableVpVtl
    | StartVirtualProcessor
    | GetVpRegisters
    | SetVpRegisters
    | ModifyVtlProtectionMask
    | VtlCall
    | VtlReturn
    | Hypercall
    | MovToCr
    | Wrmsr
    | Rdmsr
    | Xsetbv
    | LoadTableRegister
    | MemoryAccess
    | WriteVtlControl
    | ClearMessageSlot
)
