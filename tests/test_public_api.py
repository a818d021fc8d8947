"""Pins the public names and shapes of API.md, the contract checked from outside the project."""

from __future__ import annotations

import enum
import inspect
import typing
from typing import Any

import msgspec
import pytest

import protocol
import runtime
from protocol import (
    HV_PARTITION_ID_SELF,
    HV_VP_INDEX_SELF,
    AccessKind,
    Completed,
    EnablePartitionVtl,
    EnableVpVtl,
    ExceptionInjected,
    GetVpRegisters,
    HvRegisterName as Reg,
    HvStatus,
    Hypercall,
    HypercallResult,
    InitialVpContext,
    Intercepted,
    InterceptMessage,
    LoadTableRegister,
    MemoryAccess,
    ModifyVtlProtectionMask,
    MovToCr,
    ProtocolError,
    Rdmsr,
    RegisterAssoc,
    SetVpRegisters,
    SimulationError,
    StartVirtualProcessor,
    Vtl,
    VtlCall,
    VtlReturn,
    VtlSwitched,
    Wrmsr,
    Xsetbv,
)
from runtime import Partition, Runtime, Vp, open_runtime

REQUIRED = object()

#: The names of API.md's example import block, per module.
API_IMPORTS: dict[str, list[str]] = {
    "runtime": ["open_runtime"],
    "protocol": [
        "Vtl",
        "HvStatus",
        "HvRegisterName",
        "HV_VP_INDEX_SELF",
        "HV_PARTITION_ID_SELF",
        "EnablePartitionVtl",
        "EnableVpVtl",
        "StartVirtualProcessor",
        "GetVpRegisters",
        "SetVpRegisters",
        "ModifyVtlProtectionMask",
        "VtlCall",
        "VtlReturn",
        "RegisterAssoc",
        "InitialVpContext",
        "MovToCr",
        "Wrmsr",
        "Rdmsr",
        "Xsetbv",
        "MemoryAccess",
        "AccessKind",
        "HypercallResult",
        "ExceptionInjected",
        "VtlSwitched",
        "Intercepted",
        "Completed",
    ],
}
MODULES = {"protocol": protocol, "runtime": runtime}


def _signature(cls: type[Any]) -> dict[str, object]:
    """Field name -> default (REQUIRED when there is none) of a Struct, in declaration order."""
    result: dict[str, object] = {}
    for field in msgspec.structs.fields(cls):
        if field.default is not msgspec.NODEFAULT:
            result[field.name] = field.default
        elif field.default_factory is not msgspec.NODEFAULT:
            result[field.name] = field.default_factory()
        else:
            result[field.name] = REQUIRED
    return result


def _field_types(cls: type[Any]) -> dict[str, object]:
    return {field.name: field.type for field in msgspec.structs.fields(cls)}


# ---- Names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "name"),
    [(module, name) for module, names in API_IMPORTS.items() for name in names],
    ids=[f"{module}.{name}" for module, names in API_IMPORTS.items() for name in names],
)
def test_example_import_is_public(module: str, name: str) -> None:
    """Each name of API.md's example import block exists and is listed in its module's __all__."""
    assert hasattr(MODULES[module], name)
    assert name in MODULES[module].__all__


@pytest.mark.parametrize("module", [protocol, runtime], ids=lambda m: m.__name__)
def test_all_has_no_duplicates_and_every_name_exists(module: Any) -> None:
    """__all__ lists each name once, and every listed name is an attribute of the module."""
    names = list(module.__all__)
    assert len(names) == len(set(names))
    missing = [name for name in names if not hasattr(module, name)]
    assert missing == []


def test_self_constants() -> None:
    """HV_PARTITION_ID_SELF and HV_VP_INDEX_SELF have their TLFS values (DOMAIN 2.1)."""
    assert HV_PARTITION_ID_SELF == 0xFFFF_FFFF_FFFF_FFFF
    assert HV_VP_INDEX_SELF == 0xFFFF_FFFE


def test_vtl_and_access_kind_members() -> None:
    """Vtl has VTL0/VTL1/VTL2 and AccessKind has READ/WRITE/EXECUTE, as IntEnums."""
    assert [(m.name, int(m)) for m in Vtl] == [("VTL0", 0), ("VTL1", 1), ("VTL2", 2)]
    assert [(m.name, int(m)) for m in AccessKind] == [("READ", 0), ("WRITE", 1), ("EXECUTE", 2)]
    assert issubclass(Vtl, enum.IntEnum)
    assert issubclass(AccessKind, enum.IntEnum)


def test_error_roots() -> None:
    """Simulator faults derive from SimulationError; a bad frame's ProtocolError is also a ValueError."""
    assert issubclass(SimulationError, Exception)
    assert issubclass(ProtocolError, SimulationError)
    assert issubclass(ProtocolError, ValueError)


# ---- Entry point and handles ---------------------------------------------------------------------


def test_open_runtime_takes_keyword_only_seed_and_clock() -> None:
    """open_runtime(*, seed=None, clock="real", ...): no positional parameters."""
    parameters = inspect.signature(open_runtime).parameters
    assert parameters["seed"].kind is inspect.Parameter.KEYWORD_ONLY
    assert parameters["seed"].default is None
    assert parameters["clock"].kind is inspect.Parameter.KEYWORD_ONLY
    assert parameters["clock"].default == "real"
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    assert [p.name for p in parameters.values() if p.kind in positional] == []


def _is_async(cls: type[Any], name: str) -> bool:
    return inspect.iscoroutinefunction(inspect.getattr_static(cls, name))


@pytest.mark.parametrize("name", ["execute", "registers", "tdx_state", "sint0_message"])
def test_vp_async_methods(name: str) -> None:
    """Vp.execute and the inspection methods are coroutines (checkpoints)."""
    assert _is_async(Vp, name)


def test_vp_sync_members() -> None:
    """Vp.active_vtl is read without awaiting, and Vp.statistics() is a plain method."""
    assert isinstance(inspect.getattr_static(Vp, "active_vtl"), property)
    assert callable(Vp.statistics)
    assert not _is_async(Vp, "statistics")


def test_partition_members() -> None:
    """Partition has vp(index), vp_count, statistics() and an async stop()."""
    assert callable(Partition.vp)
    assert not _is_async(Partition, "vp")
    assert hasattr(Partition, "vp_count")
    assert callable(Partition.statistics)
    assert _is_async(Partition, "stop")
    assert _is_async(Runtime, "create_partition")


TDX_L2_STATE_FIELDS = {
    "efer": int,
    "cr0": int,
    "cr4": int,
    "entry_controls": int,
    "secondary_controls": int,
    "cr0_guest_host_mask": int,
    "cr4_guest_host_mask": int,
    "long_mode_guest": bool,
    "vmcs_writes": int,
    "commits": int,
}


def test_tdx_l2_state_fields() -> None:
    """The TdxL2State that vp.tdx_state returns has at least the fields API.md lists, so typed."""
    tdx_state_type = typing.get_type_hints(Vp.tdx_state)["return"]
    types = _field_types(tdx_state_type)
    for name, expected in TDX_L2_STATE_FIELDS.items():
        assert types.get(name) is expected, name


# ---- Outcomes, intercept messages and actions --------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (HypercallResult, {"status": REQUIRED, "reps_completed": 0, "values": []}),
        (ExceptionInjected, {"vector": REQUIRED, "error_code": None}),
        (Intercepted, {"message": REQUIRED}),
        (Completed, {"value": None}),
    ],
    ids=["HypercallResult", "ExceptionInjected", "Intercepted", "Completed"],
)
def test_outcome_fields_and_defaults(cls: type[Any], expected: dict[str, object]) -> None:
    """Each outcome has exactly API.md's fields with API.md's defaults."""
    assert _signature(cls) == expected


def test_outcome_field_types() -> None:
    """Outcome fields are typed: status is HvStatus, to_vtl is Vtl, message is InterceptMessage."""
    assert _field_types(HypercallResult)["status"] is HvStatus
    assert _field_types(VtlSwitched)["to_vtl"] is Vtl
    assert _field_types(Intercepted)["message"] is InterceptMessage


def test_vtl_switched_fields() -> None:
    """VtlSwitched(to_vtl, entry_reason): the target VTL is required, the entry reason is present."""
    signature = _signature(VtlSwitched)
    assert list(signature) == ["to_vtl", "entry_reason"]
    assert signature["to_vtl"] is REQUIRED


def test_api_example_outcome_compares_equal() -> None:
    """HypercallResult(status=HvStatus.SUCCESS) equals a fresh one with the defaulted fields."""
    assert HypercallResult(status=HvStatus.SUCCESS) == HypercallResult(
        status=HvStatus.SUCCESS, reps_completed=0, values=[]
    )


INTERCEPT_COMMON = ["message_type", "vp_index", "instruction_length", "access_type", "rip", "rflags"]
INTERCEPT_PER_TYPE = ["register_name", "value", "msr", "rax", "rdx", "gpa"]


def test_intercept_message_fields() -> None:
    """InterceptMessage has the common header fields and the per-type ones (None when not that type)."""
    signature = _signature(InterceptMessage)
    for name in INTERCEPT_COMMON:
        assert name in signature, name
    for name in INTERCEPT_PER_TYPE:
        assert signature.get(name, REQUIRED) is None, name


SELF_DEFAULTS = {
    "partition_id": HV_PARTITION_ID_SELF,
    "vp_index": HV_VP_INDEX_SELF,
    "target_vtl": None,
    "rep_start": 0,
}

ACTION_SIGNATURES: list[tuple[type[Any], dict[str, object]]] = [
    (
        EnablePartitionVtl,
        {
            "target_vtl": REQUIRED,
            "enable_mbec": False,
            "enable_supervisor_shadow_stack": False,
            "enable_hardware_hvpt": False,
            "partition_id": HV_PARTITION_ID_SELF,
        },
    ),
    (
        EnableVpVtl,
        {
            "vp_index": REQUIRED,
            "target_vtl": REQUIRED,
            "context": REQUIRED,
            "partition_id": HV_PARTITION_ID_SELF,
        },
    ),
    (
        StartVirtualProcessor,
        {
            "vp_index": REQUIRED,
            "target_vtl": REQUIRED,
            "context": REQUIRED,
            "partition_id": HV_PARTITION_ID_SELF,
        },
    ),
    (GetVpRegisters, {"names": REQUIRED, **SELF_DEFAULTS}),
    (SetVpRegisters, {"registers": REQUIRED, **SELF_DEFAULTS}),
    (
        ModifyVtlProtectionMask,
        {
            "gpns": REQUIRED,
            "map_flags": REQUIRED,
            "partition_id": HV_PARTITION_ID_SELF,
            "target_vtl": None,
            "rep_start": 0,
        },
    ),
    (VtlCall, {"input": 0, "control_flags": 0}),
    (VtlReturn, {"fast": False, "control_flags": 0}),
    (Hypercall, {"code": REQUIRED}),
    (MovToCr, {"cr": REQUIRED, "value": REQUIRED}),
    (Wrmsr, {"msr": REQUIRED, "value": REQUIRED}),
    (Rdmsr, {"msr": REQUIRED}),
    (Xsetbv, {"value": REQUIRED}),
    (LoadTableRegister, {"which": REQUIRED, "value": REQUIRED}),
    (MemoryAccess, {"gpa": REQUIRED, "kind": REQUIRED}),
    (RegisterAssoc, {"name": REQUIRED}),
]


@pytest.mark.parametrize(
    ("cls", "expected"), ACTION_SIGNATURES, ids=[cls.__name__ for cls, _ in ACTION_SIGNATURES]
)
def test_action_fields_and_defaults(cls: type[Any], expected: dict[str, object]) -> None:
    """Each action has API.md's fields with API.md's defaults (extra optional fields are allowed)."""
    signature = _signature(cls)
    for name, default in expected.items():
        assert name in signature, name
        assert signature[name] == default, name
    extra_required = [
        name for name, default in signature.items() if default is REQUIRED and name not in expected
    ]
    assert extra_required == []


def test_initial_vp_context_fields() -> None:
    """InitialVpContext carries exactly the InitialVpContextX64 fields, in the TLFS order."""
    assert list(_signature(InitialVpContext)) == [
        "rip",
        "rsp",
        "rflags",
        "cs",
        "ds",
        "es",
        "fs",
        "gs",
        "ss",
        "tr",
        "ldtr",
        "idtr",
        "gdtr",
        "efer",
        "cr0",
        "cr3",
        "cr4",
        "msr_cr_pat",
    ]


@pytest.mark.parametrize("cls", typing.get_args(protocol.Message), ids=lambda cls: cls.__name__)
def test_messages_are_frozen(cls: type[Any]) -> None:
    """Protocol messages are frozen Structs: values that cannot change after they are made."""
    assert cls.__struct_config__.frozen


def test_a_message_cannot_be_changed() -> None:
    """Assigning to a field of a message raises AttributeError."""
    message = Wrmsr(msr=0x1B, value=0xFEE0_0900)
    with pytest.raises(AttributeError):
        message.value = 0  # type: ignore[misc]  # the point of the test


def test_messages_refuse_positional_arguments() -> None:
    """Protocol messages are keyword-only: a positional argument is a TypeError.

    msgspec applies kw_only only to the fields of the class that declares it, so every message
    class repeats kw_only=True (as it repeats frozen=True).
    """
    with pytest.raises(TypeError):
        Wrmsr(0, 1)  # type: ignore[misc]  # the point of the test


# ---- The API.md example, run ----------------------------------------------------------------------


async def test_api_example_runs() -> None:
    """API.md's entry-point example: EnablePartitionVtl from VTL0 on VP 0 of a 4-VP partition succeeds."""
    async with open_runtime(seed=1) as rt:
        part = await rt.create_partition(vp_count=4)
        assert part.vp_count == 4
        vp = part.vp(0)
        assert vp.active_vtl is Vtl.VTL0
        out = await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1, enable_mbec=True))
        assert out == HypercallResult(status=HvStatus.SUCCESS)
        state = await vp.tdx_state(Vtl.VTL0)
        for name, expected in TDX_L2_STATE_FIELDS.items():
            assert isinstance(getattr(state, name), expected), name
        assert isinstance(await vp.registers(Vtl.VTL0, [Reg.RIP]), dict)
        assert await vp.sint0_message(Vtl.VTL1) is None
        await part.stop()


async def test_unimplemented_hypercall_code_is_refused() -> None:
    """The raw Hypercall form for a code the simulator does not implement returns INVALID_HYPERCALL_CODE."""
    async with open_runtime(seed=1, clock="virtual") as rt:
        part = await rt.create_partition(vp_count=1)
        out = await part.vp(0).execute(Hypercall(code=0x0001))
        assert out == HypercallResult(status=HvStatus.INVALID_HYPERCALL_CODE)


async def test_bad_config_raises_value_error_naming_the_field() -> None:
    """create_partition with a bad configuration value raises ValueError naming the field."""
    async with open_runtime() as rt:
        with pytest.raises(ValueError, match="vp_count"):
            await rt.create_partition(vp_count=0)
        with pytest.raises(ValueError, match="vp_count"):
            await rt.create_partition(vp_count=1025)


def test_protocol_exports_the_x86_and_vmx_constants() -> None:
    """CR0_*, CR4_*, EFER_* and the VM-entry/secondary control bits are public in ``protocol``."""
    import protocol
    from protocol import _x86

    wanted = [
        name
        for name in vars(_x86)
        if name.startswith(("CR0_", "CR4_", "EFER_", "VMX_ENTRY_CONTROL_", "SECONDARY_CONTROL_"))
    ]
    assert len(wanted) >= 40
    for name in wanted:
        assert name in protocol.__all__, name
        assert getattr(protocol, name) == getattr(_x86, name)
    assert protocol.VMX_ENTRY_CONTROL_LONG_MODE_GUEST == 0x200
    assert protocol.CR0_PG == 0x8000_0000
    assert protocol.EFER_LMA == 0x400


def test_runtime_exports_the_errors_users_catch() -> None:
    """API.md: SimulationError, Busy, VpNotRunning, PartitionFailed and ProtocolError from ``runtime``."""
    import runtime
    from protocol import ProtocolError, SimulationError

    for name in ("SimulationError", "Busy", "VpNotRunning", "PartitionFailed", "ProtocolError"):
        assert name in runtime.__all__
        assert issubclass(getattr(runtime, name), SimulationError)
    assert runtime.ProtocolError is ProtocolError
    assert issubclass(runtime.ProtocolError, ValueError)
