"""DOMAIN 7.2's VM-entry checks as a pure function of one VTL's committed state."""

from __future__ import annotations

import re
from typing import Final

import pytest

from actors._entry import CHECKS, entry_failures
from actors._registers import PRIVATE_RESET
from actors._tdx import NO_REGISTRATION, VmcsField, vmcs_image
from protocol import HvRegisterName as Reg, Vtl
from protocol._x86 import (
    CR0_PE,
    CR4_MCE,
    CR4_VMXE,
    DEFAULT_VMX_CR4_FIXED1,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    VMX_ENTRY_CONTROL_LONG_MODE_GUEST,
)
from tests.guest import long_mode_context

#: A 64-bit kernel's VTL0 as a register file: long_mode_context's values.
_CONTEXT = long_mode_context(0xFFFF_F800_0000_1000)
_LONG_MODE: Final[dict[int, int]] = PRIVATE_RESET | {
    Reg.RIP: _CONTEXT.rip,
    Reg.RFLAGS: _CONTEXT.rflags,
    Reg.CS: _CONTEXT.cs,
    Reg.TR: _CONTEXT.tr,
    Reg.CR0: _CONTEXT.cr0,
    Reg.CR3: _CONTEXT.cr3,
    Reg.CR4: _CONTEXT.cr4,
    Reg.EFER: _CONTEXT.efer,
    Reg.PAT: _CONTEXT.msr_cr_pat,
}


def _failures(registers: dict[int, int], fields: dict[int, int] | None = None) -> list[str]:
    """The failed checks of ``registers``' committed state, with VMCS ``fields`` overridden."""
    image = vmcs_image(Vtl.VTL0, registers.__getitem__, NO_REGISTRATION, DEFAULT_VMX_CR4_FIXED1)
    image.update(fields or {})
    return entry_failures(registers.__getitem__, image, DEFAULT_VMX_CR4_FIXED1, 52)


def _numbers(problems: list[str]) -> list[int]:
    return [int(re.match(r"check (\d) \(", p).group(1)) for p in problems]  # type: ignore[union-attr]


def test_reset_and_long_mode_states_enter() -> None:
    """The TDX reset state (real mode, unrestricted guest) and a 64-bit kernel pass every check."""
    assert _failures(dict(PRIVATE_RESET)) == []
    assert _failures(_LONG_MODE) == []


def test_every_check_has_its_number_and_name() -> None:
    assert sorted(CHECKS) == list(range(1, 9))
    assert all(CHECKS.values())


@pytest.mark.parametrize(
    ("changes", "fields", "expected"),
    [
        pytest.param({Reg.CR4: 0}, {}, [1], id="1-ia32e-without-pae"),
        pytest.param({}, {VmcsField.GUEST_EFER: EFER_LME | EFER_NXE}, [2, 2], id="2-lma-not-entry-control"),
        # Without the IA-32e control the 64-bit RIP also fails check 5: both are named.
        pytest.param(
            {},
            {VmcsField.ENTRY_CONTROLS: 0, VmcsField.GUEST_EFER: EFER_LME | EFER_NXE},
            [2, 5],
            id="2-pg-lme-lma",
        ),
        pytest.param({}, {VmcsField.GUEST_CR0: 0x8000_0031 & ~CR0_PE}, [3], id="3-pg-without-pe"),
        pytest.param({}, {VmcsField.GUEST_CR0: 0x8000_0011}, [3], id="3-cr0-fixed0-ne"),
        pytest.param({}, {VmcsField.GUEST_CR4: 0x20 | CR4_MCE}, [3], id="3-cr4-fixed0-vmxe"),
        pytest.param(
            {}, {VmcsField.GUEST_CR4: 0x20 | CR4_MCE | CR4_VMXE | (1 << 24)}, [3], id="3-cr4-fixed1"
        ),
        pytest.param({Reg.RFLAGS: 0x8002}, {}, [4], id="4-rflags-bit-15"),
        pytest.param({Reg.RFLAGS: 0x2_0002}, {}, [4], id="4-rflags-vm-in-ia32e"),
        pytest.param({Reg.RIP: 1 << 56}, {}, [5], id="5-rip-not-canonical"),
        pytest.param({Reg.CS: _CONTEXT.cs | (0x4000 << 112)}, {}, [6], id="6-cs-l-and-d"),
        pytest.param({Reg.TR: _CONTEXT.tr & ~(0xF << 112) | (9 << 112)}, {}, [6], id="6-tr-available-tss"),
        pytest.param({Reg.EFER: EFER_LME | EFER_LMA | EFER_NXE | (1 << 14)}, {}, [7], id="7-efer-ffxsr"),
        pytest.param({Reg.PAT: 0x0007_0406_0007_0403}, {}, [7], id="7-pat-type-3"),
        pytest.param({Reg.CR3: 1 << 52}, {}, [8], id="8-cr3-width"),
    ],
)
def test_each_check_names_itself(
    changes: dict[int, int], fields: dict[int, int], expected: list[int]
) -> None:
    """One violation at a time: exactly that check fails, named by number and name."""
    problems = _failures(_LONG_MODE | changes, fields)
    assert _numbers(problems) == expected
    for number, problem in zip(expected, problems, strict=True):
        assert problem.startswith(f"check {number} ({CHECKS[number]}): ")


def test_entry_control_clear_with_pcide_and_rip_above_4g() -> None:
    """Outside IA-32e mode: CR4.PCIDE must be 0 (check 1), RIP bits 63:32 must be 0 (check 5)."""
    registers = dict(PRIVATE_RESET) | {Reg.CR0: 0x11, Reg.CR4: 0x2_0020, Reg.RIP: 1 << 32}
    problems = _failures(registers)
    assert _numbers(problems) == [1, 5]
    image = vmcs_image(Vtl.VTL0, registers.__getitem__, NO_REGISTRATION, DEFAULT_VMX_CR4_FIXED1)
    assert not image[VmcsField.ENTRY_CONTROLS] & VMX_ENTRY_CONTROL_LONG_MODE_GUEST
