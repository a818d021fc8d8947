"""Actions refuse, on construction, values that a handler would otherwise misread."""

from __future__ import annotations

import pytest

from protocol import AccessKind, LoadTableRegister, MemoryAccess, MovToCr


@pytest.mark.parametrize("cr", [1, 2, 3, 8])
def test_mov_to_cr_takes_only_cr0_and_cr4(cr: int) -> None:
    """MOV to CRn other than 0 and 4 does not exit to the paravisor: a ValueError, not CR4."""
    with pytest.raises(ValueError, match="only CR0 and CR4"):
        MovToCr(cr=cr, value=0)  # type: ignore[arg-type]  # the point of the test


def test_load_table_register_names_a_table() -> None:
    """LoadTableRegister.which must name GDTR, IDTR, LDTR or TR."""
    with pytest.raises(ValueError, match="expected 'gdtr'"):
        LoadTableRegister(which="cs", value=0)  # type: ignore[arg-type]  # the point of the test
    assert LoadTableRegister(which="tr", value=1).which == "tr"


def test_memory_access_kind_is_an_access_kind() -> None:
    """MemoryAccess.kind outside READ/WRITE/EXECUTE is refused instead of read as an execute."""
    with pytest.raises(ValueError, match="AccessKind"):
        MemoryAccess(gpa=0x1000, kind=7)  # type: ignore[arg-type]  # the point of the test
    assert MemoryAccess(gpa=0x1000, kind=AccessKind.EXECUTE).kind == AccessKind.EXECUTE
