"""Hypothesis strategies for protocol messages, with integer ranges matching each field's width.

Explicit ``st.builds`` strategies, not ``st.from_type``: the latter ignores ``msgspec.Meta`` bounds
and the ``__post_init__`` width checks, so it generates values the Structs refuse.

Wide values (``register_values``, ``segment_values``, ``table_values``) are biased so that
values of 2**64 and above, which the codec sends in a ``Wide`` envelope, appear often.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st

from protocol import (
    AccessKind,
    ClearMessageSlot,
    Completed,
    EnablePartitionVtl,
    EnableVpVtl,
    ErrorReply,
    ExceptionInjected,
    GetVpRegisters,
    HvMessageType,
    HvRegisterName,
    HvStatus,
    Hypercall,
    HypercallCode,
    HypercallResult,
    InitialVpContext,
    InterceptDropped,
    Intercepted,
    InterceptMessage,
    InterceptPosted,
    LoadTableRegister,
    MemoryAccess,
    ModifyVtlProtectionMask,
    MovToCr,
    Rdmsr,
    RegisterAssoc,
    Reply,
    Request,
    SetVpRegisters,
    StartVirtualProcessor,
    Vtl,
    VtlCall,
    VtlReturn,
    VtlSwitched,
    WriteVtlControl,
    Wrmsr,
    Xsetbv,
)

if TYPE_CHECKING:
    from protocol import Action, Message, Outcome

__all__ = (
    "ACTION_STRATEGIES",
    "MESSAGE_STRATEGIES",
    "OUTCOME_STRATEGIES",
    "action_classes",
    "actions",
    "input_vtls",
    "initial_vp_contexts",
    "intercept_messages",
    "messages",
    "outcome_classes",
    "outcomes",
    "register_assocs",
    "register_names",
    "register_values",
    "segment_values",
    "table_values",
    "u8",
    "u16",
    "u32",
    "u64",
    "u128",
    "uint",
)

#: Longest list drawn for a rep hypercall or a result list: keeps frames small and tests fast.
MAX_LIST = 8


def uint(bits: int) -> st.SearchStrategy[int]:
    """Unsigned integers of ``bits`` bits, with the boundary values 0 and 2**bits-1 favoured."""
    top = (1 << bits) - 1
    return st.one_of(st.sampled_from((0, top)), st.integers(0, top))


def u8() -> st.SearchStrategy[int]:
    """Unsigned 8-bit integers."""
    return uint(8)


def u16() -> st.SearchStrategy[int]:
    """Unsigned 16-bit integers."""
    return uint(16)


def u32() -> st.SearchStrategy[int]:
    """Unsigned 32-bit integers."""
    return uint(32)


def u64() -> st.SearchStrategy[int]:
    """Unsigned 64-bit integers (the widest msgpack carries natively)."""
    return uint(64)


def u128() -> st.SearchStrategy[int]:
    """Unsigned 128-bit integers, half of them at or above 2**64 (the ``Wide`` envelope's case)."""
    return st.one_of(
        st.sampled_from((0, (1 << 64) - 1, 1 << 64, (1 << 128) - 1)),
        st.integers(0, (1 << 64) - 1),
        st.integers(1 << 64, (1 << 128) - 1),
    )


def register_values() -> st.SearchStrategy[int]:
    """HvRegisterValue: any u128 (64-bit registers use the low half, segments the whole)."""
    return u128()


def segment_values() -> st.SearchStrategy[int]:
    """Packed HvX64SegmentRegister values (base @0, limit @64, selector @96, attributes @112)."""
    return st.builds(
        lambda base, limit, selector, attributes: (
            base | (limit << 64) | (selector << 96) | (attributes << 112)
        ),
        u64(),
        u32(),
        u16(),
        u16(),
    )


def table_values() -> st.SearchStrategy[int]:
    """Packed HvX64TableRegister values (limit @48, base @64); the padding may hold junk too."""
    return st.one_of(
        st.builds(lambda base, limit: (limit << 48) | (base << 64), u64(), u16()),
        u128(),
    )


def register_names() -> st.SearchStrategy[int]:
    """Register names: mostly real HvRegisterName members, sometimes any u32 (unknown names)."""
    return st.one_of(st.sampled_from(HvRegisterName), u32())


def input_vtls() -> st.SearchStrategy[int | None]:
    """HvInputVtl target values: None (the caller's VTL) or the 4-bit value field."""
    return st.one_of(st.none(), st.integers(0, 15))


def _rep_start() -> st.SearchStrategy[int]:
    return uint(12)


def _small_lists(elements: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(elements, max_size=MAX_LIST)


def register_assocs() -> st.SearchStrategy[RegisterAssoc]:
    """RegisterAssoc elements of SetVpRegisters."""
    return st.builds(RegisterAssoc, name=register_names(), value=register_values())


def initial_vp_contexts() -> st.SearchStrategy[InitialVpContext]:
    """InitialVpContextX64 with 64-bit scalars and 128-bit segment and table registers."""
    segments = {
        name: segment_values() | u128() for name in ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldtr")
    }
    tables = {name: table_values() for name in ("idtr", "gdtr")}
    scalars = {name: u64() for name in ("rip", "rsp", "rflags", "efer", "cr0", "cr3", "cr4", "msr_cr_pat")}
    return st.builds(InitialVpContext, **segments, **tables, **scalars)


# ---- Actions ------------------------------------------------------------------------------------


def _vtl_bytes() -> st.SearchStrategy[int]:
    """A raw target-VTL input byte: the real VTLs most of the time, any u8 otherwise."""
    return st.one_of(st.sampled_from(Vtl), u8())


ACTION_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    EnablePartitionVtl: st.builds(
        EnablePartitionVtl,
        target_vtl=_vtl_bytes(),
        enable_mbec=st.booleans(),
        enable_supervisor_shadow_stack=st.booleans(),
        enable_hardware_hvpt=st.booleans(),
        partition_id=u64(),
    ),
    EnableVpVtl: st.builds(
        EnableVpVtl,
        vp_index=u32(),
        target_vtl=_vtl_bytes(),
        context=initial_vp_contexts(),
        partition_id=u64(),
    ),
    StartVirtualProcessor: st.builds(
        StartVirtualProcessor,
        vp_index=u32(),
        target_vtl=_vtl_bytes(),
        context=initial_vp_contexts(),
        partition_id=u64(),
    ),
    GetVpRegisters: st.builds(
        GetVpRegisters,
        names=_small_lists(register_names()),
        partition_id=u64(),
        vp_index=u32(),
        target_vtl=input_vtls(),
        rep_start=_rep_start(),
    ),
    SetVpRegisters: st.builds(
        SetVpRegisters,
        registers=_small_lists(register_assocs()),
        partition_id=u64(),
        vp_index=u32(),
        target_vtl=input_vtls(),
        rep_start=_rep_start(),
    ),
    ModifyVtlProtectionMask: st.builds(
        ModifyVtlProtectionMask,
        gpns=_small_lists(u64()),
        map_flags=u32(),
        partition_id=u64(),
        target_vtl=input_vtls(),
        rep_start=_rep_start(),
    ),
    VtlCall: st.builds(VtlCall, input=u64(), control_flags=u64()),
    VtlReturn: st.builds(VtlReturn, fast=st.booleans(), control_flags=u64(), input=st.none() | u64()),
    Hypercall: st.builds(
        Hypercall,
        code=st.one_of(st.sampled_from(HypercallCode), u16()),
        rep_count=uint(12),  # the 12-bit fields of the hypercall input value (DOMAIN 7.4)
        rep_start=uint(12),
        fast=st.booleans(),
    ),
    MovToCr: st.builds(MovToCr, cr=st.sampled_from((0, 4)), value=u64()),
    Wrmsr: st.builds(Wrmsr, msr=u32(), value=u64()),
    Rdmsr: st.builds(Rdmsr, msr=u32()),
    Xsetbv: st.builds(Xsetbv, value=u64()),
    LoadTableRegister: st.one_of(
        st.builds(LoadTableRegister, which=st.sampled_from(("gdtr", "idtr")), value=table_values()),
        st.builds(LoadTableRegister, which=st.sampled_from(("ldtr", "tr")), value=segment_values() | u128()),
    ),
    MemoryAccess: st.builds(MemoryAccess, gpa=u64(), kind=st.sampled_from(AccessKind)),
    WriteVtlControl: st.builds(WriteVtlControl, return_rax=u64(), return_rcx=u64()),
    ClearMessageSlot: st.builds(ClearMessageSlot, sint=st.integers(0, 15)),
}


def action_classes() -> tuple[type[Any], ...]:
    """Every Action class that ``actions()`` draws from."""
    return tuple(ACTION_STRATEGIES)


def actions() -> st.SearchStrategy[Action]:
    """Any guest action (every class of the ``protocol.Action`` union)."""
    return st.one_of(*ACTION_STRATEGIES.values())


# ---- Outcomes -----------------------------------------------------------------------------------


def intercept_messages() -> st.SearchStrategy[InterceptMessage]:
    """Intercept messages of every type, with optional payload fields set or None independently."""
    optional_u32 = st.none() | u32()
    optional_u64 = st.none() | u64()
    return st.builds(
        InterceptMessage,
        message_type=st.one_of(st.sampled_from(HvMessageType), u32()),
        vp_index=u32(),
        instruction_length=u8(),
        access_type=u8(),
        rip=u64(),
        rflags=u64(),
        execution_state=u16(),
        register_name=optional_u32,
        value=st.none() | register_values(),
        msr=optional_u32,
        rax=optional_u64,
        rdx=optional_u64,
        gpa=optional_u64,
        message_pending=st.booleans(),
    )


OUTCOME_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    HypercallResult: st.builds(
        HypercallResult,
        status=st.sampled_from(HvStatus),
        reps_completed=u16(),
        values=_small_lists(register_values()),
    ),
    ExceptionInjected: st.builds(ExceptionInjected, vector=u8(), error_code=st.none() | u32()),
    VtlSwitched: st.builds(VtlSwitched, to_vtl=st.sampled_from(Vtl), entry_reason=u32()),
    Intercepted: st.builds(Intercepted, message=intercept_messages()),
    InterceptPosted: st.builds(InterceptPosted, message=intercept_messages()),
    InterceptDropped: st.builds(InterceptDropped, message=intercept_messages(), reason=st.text(max_size=32)),
    Completed: st.builds(Completed, value=st.none() | u64()),
}


def outcome_classes() -> tuple[type[Any], ...]:
    """Every Outcome class that ``outcomes()`` draws from."""
    return tuple(OUTCOME_STRATEGIES)


def outcomes() -> st.SearchStrategy[Outcome]:
    """Any outcome (every class of the ``protocol.Outcome`` union)."""
    return st.one_of(*OUTCOME_STRATEGIES.values())


# ---- Everything on the wire ---------------------------------------------------------------------

#: One strategy per class of the ``protocol.Message`` union.
MESSAGE_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    **ACTION_STRATEGIES,
    **OUTCOME_STRATEGIES,
    InterceptMessage: intercept_messages(),
    RegisterAssoc: register_assocs(),
    InitialVpContext: initial_vp_contexts(),
    Request: st.builds(Request, id=u64(), partition=u32(), vp_index=u32(), action=actions()),
    Reply: st.builds(Reply, id=u64(), outcome=outcomes()),
    ErrorReply: st.builds(ErrorReply, id=u64(), code=u16(), message=st.text(max_size=64)),
}


def messages() -> st.SearchStrategy[Message]:
    """Any protocol message (every class of the ``protocol.Message`` union)."""
    return st.one_of(*MESSAGE_STRATEGIES.values())
