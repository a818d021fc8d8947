"""Hyper-V enums: exact TLFS values of DOMAIN 2.1-2.5, and member names by API.md's rule."""

from __future__ import annotations

import enum
import re
from typing import Any

import pytest

from protocol import (
    AccessKind,
    HvMessageType,
    HvRegisterName,
    HvStatus,
    HvVtlEntryReason,
    HypercallCode,
    Vtl,
)


def upper_snake(name: str) -> str:
    """API.md naming rule: an underscore before each capital that follows a lower-case letter or digit."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()


@pytest.mark.parametrize(
    ("camel", "snake"),
    [
        ("Success", "SUCCESS"),
        ("InvalidVtlState", "INVALID_VTL_STATE"),
        ("VtlAlreadyEnabled", "VTL_ALREADY_ENABLED"),
        ("Cr0", "CR0"),
        ("Efer", "EFER"),
        ("PendingEvent0", "PENDING_EVENT0"),
        ("Sipp", "SIPP"),
        ("Sint0", "SINT0"),
        ("Pl0Ssp", "PL0_SSP"),
        ("VsmVpSecureConfigVtl0", "VSM_VP_SECURE_CONFIG_VTL0"),
        ("CrInterceptCr0Mask", "CR_INTERCEPT_CR0_MASK"),
        ("CrInterceptIa32MiscEnableMask", "CR_INTERCEPT_IA32_MISC_ENABLE_MASK"),
        ("Stimer0Config", "STIMER0_CONFIG"),
        ("X64IoPortIntercept", "X64_IO_PORT_INTERCEPT"),
        ("R8", "R8"),
    ],
)
def test_upper_snake_follows_the_api_rule(camel: str, snake: str) -> None:
    """The name helper reproduces API.md's own examples of the naming rule."""
    assert upper_snake(camel) == snake


# ---- DOMAIN 2.2 / OpenVMM HvError (0 = Success) ------------------------------------------------

STATUSES: dict[str, int] = {
    "Success": 0x0000,
    "InvalidHypercallCode": 0x0002,
    "InvalidHypercallInput": 0x0003,
    "InvalidAlignment": 0x0004,
    "InvalidParameter": 0x0005,
    "AccessDenied": 0x0006,
    "InvalidPartitionState": 0x0007,
    "OperationDenied": 0x0008,
    "UnknownProperty": 0x0009,
    "PropertyValueOutOfRange": 0x000A,
    "InsufficientMemory": 0x000B,
    "PartitionTooDeep": 0x000C,
    "InvalidPartitionId": 0x000D,
    "InvalidVpIndex": 0x000E,
    "NotFound": 0x0010,
    "InvalidPortId": 0x0011,
    "InvalidConnectionId": 0x0012,
    "InsufficientBuffers": 0x0013,
    "NotAcknowledged": 0x0014,
    "InvalidVpState": 0x0015,
    "Acknowledged": 0x0016,
    "InvalidSaveRestoreState": 0x0017,
    "InvalidSynicState": 0x0018,
    "ObjectInUse": 0x0019,
    "InvalidProximityDomainInfo": 0x001A,
    "NoData": 0x001B,
    "Inactive": 0x001C,
    "NoResources": 0x001D,
    "FeatureUnavailable": 0x001E,
    "PartialPacket": 0x001F,
    "ProcessorFeatureNotSupported": 0x0020,
    "ProcessorCacheLineFlushSizeIncompatible": 0x0030,
    "InsufficientBuffer": 0x0033,
    "IncompatibleProcessor": 0x0037,
    "InsufficientDeviceDomains": 0x0038,
    "CpuidFeatureValidationError": 0x003C,
    "CpuidXsaveFeatureValidationError": 0x003D,
    "ProcessorStartupTimeout": 0x003E,
    "SmxEnabled": 0x003F,
    "InvalidLpIndex": 0x0041,
    "InvalidRegisterValue": 0x0050,
    "InvalidVtlState": 0x0051,
    "NxNotDetected": 0x0055,
    "InvalidDeviceId": 0x0057,
    "InvalidDeviceState": 0x0058,
    "PendingPageRequests": 0x0059,
    "PageRequestInvalid": 0x0060,
    "KeyAlreadyExists": 0x0065,
    "DeviceAlreadyInDomain": 0x0066,
    "InvalidCpuGroupId": 0x006F,
    "InvalidCpuGroupState": 0x0070,
    "OperationFailed": 0x0071,
    "NotAllowedWithNestedVirtActive": 0x0072,
    "InsufficientRootMemory": 0x0073,
    "EventBufferAlreadyFreed": 0x0074,
    "Timeout": 0x0078,
    "VtlAlreadyEnabled": 0x0086,
    "UnknownRegisterName": 0x0087,
}

# ---- DOMAIN 2.1 (HVDEF HypercallCode, the codes OpenHCL's TDX dispatcher handles) --------------

HYPERCALLS: dict[str, int] = {
    "HvCallFlushVirtualAddressSpace": 0x0002,
    "HvCallFlushVirtualAddressList": 0x0003,
    "HvCallSendSyntheticClusterIpi": 0x000B,
    "HvCallModifyVtlProtectionMask": 0x000C,
    "HvCallEnablePartitionVtl": 0x000D,
    "HvCallEnableVpVtl": 0x000F,
    "HvCallVtlCall": 0x0011,
    "HvCallVtlReturn": 0x0012,
    "HvCallFlushVirtualAddressSpaceEx": 0x0013,
    "HvCallFlushVirtualAddressListEx": 0x0014,
    "HvCallSendSyntheticClusterIpiEx": 0x0015,
    "HvCallInstallIntercept": 0x004D,
    "HvCallGetVpRegisters": 0x0050,
    "HvCallSetVpRegisters": 0x0051,
    "HvCallTranslateVirtualAddress": 0x0052,
    "HvCallPostMessage": 0x005C,
    "HvCallSignalEvent": 0x005D,
    "HvCallRetargetDeviceInterrupt": 0x007E,
    "HvCallAssertVirtualInterrupt": 0x0094,
    "HvCallStartVirtualProcessor": 0x0099,
    "HvCallGetVpIndexFromApicId": 0x009A,
    "HvCallModifySparseGpaPageHostVisibility": 0x00DB,
    "HvCallQuerySparseGpaPageHostVisibility": 0x011C,
    "HvExtCallQueryCapabilities": 0x8001,
}


def hypercall_member_name(name: str) -> str:
    """Hypercall codes drop the ``HvCall`` prefix (and, by protocol/_hv.py's choice, ``HvExtCall``)."""
    for prefix in ("HvExtCall", "HvCall"):
        if name.startswith(prefix):
            return upper_snake(name.removeprefix(prefix))
    raise AssertionError(name)


# ---- DOMAIN 2.3 (HVDEF HvX64RegisterName) --------------------------------------------------------

REGISTERS: dict[str, int] = {
    "PendingEvent0": 0x0001_0004,
    "Rax": 0x0002_0000,
    "Rcx": 0x0002_0001,
    "Rdx": 0x0002_0002,
    "Rbx": 0x0002_0003,
    "Rsp": 0x0002_0004,
    "Rbp": 0x0002_0005,
    "Rsi": 0x0002_0006,
    "Rdi": 0x0002_0007,
    **{f"R{n}": 0x0002_0000 + n for n in range(8, 16)},
    "Rip": 0x0002_0010,
    "Rflags": 0x0002_0011,
    "Cr0": 0x0004_0000,
    "Cr2": 0x0004_0001,
    "Cr3": 0x0004_0002,
    "Cr4": 0x0004_0003,
    "Cr8": 0x0004_0004,
    "Xfem": 0x0004_0005,
    "IntermediateCr0": 0x0004_1000,
    "IntermediateCr3": 0x0004_1002,
    "IntermediateCr4": 0x0004_1003,
    "IntermediateCr8": 0x0004_1004,
    "Dr0": 0x0005_0000,
    "Dr1": 0x0005_0001,
    "Dr2": 0x0005_0002,
    "Dr3": 0x0005_0003,
    "Dr6": 0x0005_0004,
    "Dr7": 0x0005_0005,
    "Es": 0x0006_0000,
    "Cs": 0x0006_0001,
    "Ss": 0x0006_0002,
    "Ds": 0x0006_0003,
    "Fs": 0x0006_0004,
    "Gs": 0x0006_0005,
    "Ldtr": 0x0006_0006,
    "Tr": 0x0006_0007,
    "Idtr": 0x0007_0000,
    "Gdtr": 0x0007_0001,
    "Efer": 0x0008_0001,
    "KernelGsBase": 0x0008_0002,
    "ApicBase": 0x0008_0003,
    "Pat": 0x0008_0004,
    "SysenterCs": 0x0008_0005,
    "SysenterEip": 0x0008_0006,
    "SysenterEsp": 0x0008_0007,
    "Star": 0x0008_0008,
    "Lstar": 0x0008_0009,
    "Cstar": 0x0008_000A,
    "Sfmask": 0x0008_000B,
    "TscAux": 0x0008_007B,
    "Xss": 0x0008_008B,
    "Pl0Ssp": 0x0008_008F,
    "Pl1Ssp": 0x0008_0090,
    "Pl2Ssp": 0x0008_0091,
    "Pl3Ssp": 0x0008_0092,
    "InterruptSspTableAddr": 0x0008_0093,
    "VpAssistPage": 0x0009_0013,
    **{f"Sint{n}": 0x000A_0000 + n for n in range(16)},
    "Scontrol": 0x000A_0010,
    "Sversion": 0x000A_0011,
    "Sifp": 0x000A_0012,
    "Sipp": 0x000A_0013,
    "Eom": 0x000A_0014,
    **{f"Stimer{n}Config": 0x000B_0000 + 2 * n for n in range(4)},
    **{f"Stimer{n}Count": 0x000B_0001 + 2 * n for n in range(4)},
    "VsmCodePageOffsets": 0x000D_0002,
    "VsmVpStatus": 0x000D_0003,
    "VsmPartitionStatus": 0x000D_0004,
    "VsmVina": 0x000D_0005,
    "VsmCapabilities": 0x000D_0006,
    "VsmPartitionConfig": 0x000D_0007,
    "GuestVsmPartitionConfig": 0x000D_0008,
    **{f"VsmVpSecureConfigVtl{n}": 0x000D_0010 + n for n in range(15)},
    "VsmVpWaitForTlbLock": 0x000D_0020,
    "CrInterceptControl": 0x000E_0000,
    "CrInterceptCr0Mask": 0x000E_0001,
    "CrInterceptCr4Mask": 0x000E_0002,
    "CrInterceptIa32MiscEnableMask": 0x000E_0003,
}

# ---- DOMAIN 2.5 (HVDEF HvMessageType) ------------------------------------------------------------

MESSAGE_TYPES: dict[str, int] = {
    "HvMessageTypeGpaIntercept": 0x8000_0001,
    "HvMessageTypeX64IoPortIntercept": 0x8001_0000,
    "HvMessageTypeMsrIntercept": 0x8001_0001,
    "HvMessageTypeRegisterIntercept": 0x8001_0006,
}


def _expected(table: dict[str, int], member_name: Any) -> dict[str, int]:
    return {member_name(name): value for name, value in table.items()}


CASES: dict[str, tuple[type[enum.IntEnum], dict[str, int]]] = {
    "HvStatus": (HvStatus, _expected(STATUSES, upper_snake)),
    "HypercallCode": (HypercallCode, _expected(HYPERCALLS, hypercall_member_name)),
    "HvRegisterName": (HvRegisterName, _expected(REGISTERS, upper_snake)),
    "HvMessageType": (
        HvMessageType,
        _expected(MESSAGE_TYPES, lambda name: upper_snake(name.removeprefix("HvMessageType"))),
    ),
}


@pytest.mark.parametrize(
    ("name", "value", "cls"),
    [(name, value, cls) for cls, expected in CASES.values() for name, value in expected.items()],
    ids=[f"{label}.{name}" for label, (_, expected) in CASES.items() for name in expected],
)
def test_member_has_the_domain_value(name: str, value: int, cls: type[enum.IntEnum]) -> None:
    """Every DOMAIN 2.1-2.5 name exists under its API.md UPPER_SNAKE name with its TLFS value."""
    assert cls[name].value == value
    assert cls[name] == value


@pytest.mark.parametrize("label", ["HvStatus", "HypercallCode", "HvRegisterName"])
def test_enum_has_no_members_beyond_the_domain_tables(label: str) -> None:
    """Statuses, hypercall codes and register names are exactly the DOMAIN lists, no invented ones."""
    cls, expected = CASES[label]
    assert set(cls.__members__) == set(expected)


def test_message_types_are_the_domain_ones_plus_none() -> None:
    """HvMessageType holds the four intercept types of DOMAIN 2.5 and HvMessageTypeNone (0)."""
    _, expected = CASES["HvMessageType"]
    assert set(HvMessageType.__members__) == {*expected, "NONE"}
    assert HvMessageType.NONE.value == 0


ALL_ENUMS: list[type[enum.Enum]] = [
    HvStatus,
    HypercallCode,
    HvRegisterName,
    HvMessageType,
    HvVtlEntryReason,
    Vtl,
    AccessKind,
]


@pytest.mark.parametrize("cls", ALL_ENUMS, ids=lambda cls: cls.__name__)
def test_enum_is_an_int_enum_without_aliases(cls: type[enum.Enum]) -> None:
    """Each protocol enum is an IntEnum (equal to its number) and no two members share a value."""
    assert issubclass(cls, enum.IntEnum)
    assert len(cls.__members__) == len(list(cls))
    for member in cls:
        assert member == member.value
        assert isinstance(member, int)


def test_vtl_access_kind_and_entry_reason_values() -> None:
    """Vtl is VTL0/1/2 = 0/1/2, AccessKind READ/WRITE/EXECUTE = 0/1/2, entry reasons 0-3 (DOMAIN 2.4)."""
    assert {m.name: m.value for m in Vtl} == {"VTL0": 0, "VTL1": 1, "VTL2": 2}
    assert {m.name: m.value for m in AccessKind} == {"READ": 0, "WRITE": 1, "EXECUTE": 2}
    assert {m.name: m.value for m in HvVtlEntryReason} == {
        "RESERVED": 0,
        "VTL_CALL": 1,
        "INTERRUPT": 2,
        "INTERCEPT": 3,
    }
