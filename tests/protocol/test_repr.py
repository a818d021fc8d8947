"""Reprs of protocol messages: register values in hex, counts and indices in decimal, enums by name."""

from __future__ import annotations

from protocol import (
    HV_VP_INDEX_SELF,
    Completed,
    EnableVpVtl,
    ExceptionInjected,
    HvRegisterName as Reg,
    HvStatus,
    HypercallResult,
    MovToCr,
    RegisterAssoc,
    SetVpRegisters,
    Vtl,
    VtlSwitched,
    Wrmsr,
)
from protocol._base import hex_repr
from runtime.testing import long_mode_context


def test_register_values_are_hex() -> None:
    """Values, MSRs and register names given as numbers are hex; enum members show their names."""
    assert repr(RegisterAssoc(name=Reg.CR0, value=0x8005_0033)) == (
        "RegisterAssoc(name=HvRegisterName.CR0, value=0x80050033)"
    )
    assert repr(RegisterAssoc(name=0x40000, value=1)) == "RegisterAssoc(name=0x40000, value=0x1)"
    assert repr(Wrmsr(msr=0xC000_0082, value=0xFFFF_F800_0000_1000)) == (
        "Wrmsr(msr=0xc0000082, value=0xfffff80000001000)"
    )
    assert repr(Completed(value=0xFEE0_0900)) == "Completed(value=0xfee00900)"
    assert repr(HypercallResult(status=HvStatus.SUCCESS, values=[16, 255])) == (
        "HypercallResult(status=HvStatus.SUCCESS, reps_completed=0, values=[0x10, 0xff])"
    )


def test_counts_and_indices_stay_decimal() -> None:
    """vp_index, target_vtl, vector, entry_reason, cr stay decimal; a sentinel index is hex."""
    assert repr(ExceptionInjected(vector=13, error_code=0)) == "ExceptionInjected(vector=13, error_code=0x0)"
    assert (
        repr(VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)) == "VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)"
    )
    assert repr(MovToCr(cr=4, value=0x20)) == "MovToCr(cr=4, value=0x20)"
    text = repr(SetVpRegisters(registers=[RegisterAssoc(name=Reg.RIP, value=0x1000)], target_vtl=0))
    assert f"vp_index={HV_VP_INDEX_SELF:#x}" in text
    assert "target_vtl=0," in text
    assert "RegisterAssoc(name=HvRegisterName.RIP, value=0x1000)" in text
    enable = repr(EnableVpVtl(vp_index=3, target_vtl=1, context=long_mode_context(0x40_0000)))
    assert enable.startswith("EnableVpVtl(vp_index=3, target_vtl=1, context=InitialVpContext(rip=0x400000,")


def test_hex_repr_of_a_plain_struct_matches_the_messages() -> None:
    """hex_repr works on any msgspec Struct (the actors' TdxL2State and VtlControl use it)."""
    assert hex_repr(Completed()) == "Completed(value=None)"
