"""RELIABILITY B1: the exhaustive access table of HvCallGetVpRegisters / HvCallSetVpRegisters.

Every cell (config x executing VP x caller VTL x target VTL x register name x get/set x value x
VP index) is run on the synchronous core (``VpActor`` + ``PartitionSupervisor``) of a prepared
4-VP partition (reused only while the digest proves the cells left it unchanged) and compared
with a reference table written here from DOMAIN.md (2.3, 3.1, 3.2, 3.4, 3.5, 3.7, 3.12,
Appendix B 1-4); nothing is imported from ``actors/_access.py`` or ``actors/_hypercalls.py``.
On every refusal, and on every get, a sha256 over the VP's complete state and the partition's
published view is the same before and after (only the hypercall result in RAX/RDX and the
caller's RIP + 3 may change; both are checked separately). A successful set is checked at the
place the value must land. A sample of cells also runs through the public runtime API.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import random
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from actors import PartitionConfig, PartitionSupervisor, VpActor, check_vp_invariants
from actors._registers import PRIVATE_RESET, SHARED_RESET
from protocol import (
    HV_PARTITION_ID_SELF,
    HV_VP_INDEX_SELF,
    EnablePartitionVtl,
    EnableVpVtl,
    GetVpRegisters,
    HvRegisterName as Reg,
    HvStatus,
    HypercallResult,
    RegisterAssoc,
    SetVpRegisters,
    StartVirtualProcessor,
    Vtl,
    VtlCall,
    VtlReturn,
    VtlSwitched,
)
from protocol._x86 import segment, table
from tests.guest import checked_runtime, long_mode_context

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

OK: Final = HvStatus.SUCCESS
PARAM: Final = HvStatus.INVALID_PARAMETER
DENIED: Final = HvStatus.ACCESS_DENIED
VALUE: Final = HvStatus.INVALID_REGISTER_VALUE
VP_INDEX: Final = HvStatus.INVALID_VP_INDEX
INPUT: Final = HvStatus.INVALID_HYPERCALL_INPUT

UNKNOWN_NAME: Final = 0x0009_9999
GUEST_RIP: Final = 0x681E  # VMCS field encoding (Intel SDM appendix B)
VP_COUNT: Final = 4
CONTEXT: Final = long_mode_context()
CONTEXT_VTL0: Final = long_mode_context(rip=0x9000)

# ---- the reference table, from DOMAIN.md only ------------------------------------------------------


class Rule(enum.Enum):
    """Access rule of DOMAIN 2.3's last column / 3.1, checked after the header checks."""

    NONE = "none"  # only target <= caller (already checked)
    ARCH = "arch"  # target strictly lower than caller, else AccessDenied
    TSC_AUX = "arch+tsc_aux"  # arch, then InvalidParameter without caps.tsc_aux
    PENDING = "pending"  # target >= caller -> InvalidParameter
    VINA = "vina"  # target VTL0 -> InvalidParameter
    CR_INTERCEPT = "cr-intercept"  # target != VTL1 -> AccessDenied
    # target != VTL1 -> InvalidParameter, then a VTL0 caller without AccessVsm -> AccessDenied; with
    # the header's "target > caller" check first, that last branch can never decide a cell.
    PARTITION_CONFIG = "partition-config"
    VSM_STATUS = "vsm-status"  # VTL0 caller without AccessVsm -> AccessDenied
    SECURE_CONFIG = "secure-config"  # none here; the requesting VTL is the target (3.5)


#: Rules whose outcome depends on the partition's AccessVsm / TSC_AUX configuration.
CONFIG_RULES: Final = frozenset({Rule.TSC_AUX, Rule.VSM_STATUS, Rule.PARTITION_CONFIG})


class SetKind(enum.Enum):
    """What SetVpRegisters does with a name once the access rule passed (DOMAIN 2.3 "S", 3.2)."""

    STORE = "store"  # settable: validation (if any), then written
    REFUSE = "refuse"  # not settable: InvalidParameter whatever the value
    VALIDATE_REFUSE = "validate-refuse"  # Appendix B 3: bad -> InvalidRegisterValue, good -> InvalidParameter
    APIC = "apic"  # only "no change" succeeds, anything else InvalidParameter


@dataclass(frozen=True)
class Row:
    """One register of DOMAIN 2.3: access rule, gettable, settable, a good and some bad values."""

    rule: Rule
    get: bool
    set: SetKind
    good: int = 0
    bad: tuple[int, ...] = ()
    bad_status: HvStatus = VALUE


#: Not canonical for a 57-bit VA (bit 56 set, bits 63..57 clear; bit 63 set, bit 56 clear).
CANON_BAD: Final = (0x0100_0000_0000_0000, 0x8000_0000_0000_0000)
#: 57-bit canonical but not 48-bit canonical: proves the 57-bit rule of DOMAIN 3.2.
CANON57: Final = 0x00FF_FFFF_FFFF_F000
CR0_GOOD: Final = 0x61  # PE | NE | bit 6 (reserved: silently dropped, Appendix B 4)
EFER_GOOD: Final = 0xD01  # SCE | LME | LMA | NXE (LMA is then re-derived, 3.9)
SEGMENT_GOOD: Final = segment(base=0x7FFF_FFFF_F000, limit=0xFFFF, selector=0x30, attributes=0x93)
#: Canonical for 57 bits but not for 48: the target VTL (no LA57) needs 48 (DOMAIN 3.2 Fs/Gs).
SEGMENT_BAD: Final = (
    segment(base=0x0000_8000_0000_0000, limit=0xFFFF, selector=0x30, attributes=0x93),
    segment(base=0x8000_0000_0000_0000),
)
PENDING_GP: Final = 1 | 0x100 | (13 << 16)  # pending, exception, deliver error code, #GP, error 0

_ARCH_GET_ONLY: Final = (
    *(Reg.RAX + i for i in range(16) if Reg.RAX + i != Reg.RSP),
    Reg.CR2,
    Reg.CR3,
    Reg.XFEM,
    Reg.DR0,
    Reg.DR1,
    Reg.DR2,
    Reg.ES,
    Reg.CS,
    Reg.SS,
    Reg.DS,
    Reg.TR,
)
_UNSUPPORTED: Final = (
    Reg.DR6,
    Reg.INTERMEDIATE_CR3,
    Reg.INTERMEDIATE_CR8,
    Reg.GUEST_VSM_PARTITION_CONFIG,
    Reg.VSM_VP_WAIT_FOR_TLB_LOCK,
    *(Reg.VSM_VP_SECURE_CONFIG_VTL1 + i for i in range(14)),
    UNKNOWN_NAME,
)
# DOMAIN 3.2 leaves "synic's own checks" unspecified (beyond VINA and the VP assist page): the
# values below are plainly valid (SINTs unmasked with a vector >= 16, pages enabled at a GPN).
_SYNIC_STORE: Final = {
    **{Reg.SINT0 + i: 0x2_0030 + i for i in range(16)},  # vector 0x30 + i, auto-EOI, unmasked
    Reg.SCONTROL: 1,
    Reg.SIFP: 0x6001,
    Reg.SIPP: 0x7001,
    Reg.EOM: 0,
    **{Reg.STIMER0_CONFIG + i: 0x1_0000 + i for i in range(8)},
}

ROWS: Final[dict[int, Row]] = {
    **{name: Row(Rule.ARCH, True, SetKind.REFUSE, good=0x55) for name in _ARCH_GET_ONLY},
    **{name: Row(Rule.NONE, False, SetKind.REFUSE, good=0x55) for name in _UNSUPPORTED},
    Reg.RSP: Row(Rule.ARCH, True, SetKind.STORE, good=0x7FF0),
    Reg.RIP: Row(Rule.ARCH, True, SetKind.STORE, good=0x2000),
    Reg.RFLAGS: Row(Rule.ARCH, True, SetKind.STORE, good=0x246),
    Reg.CR0: Row(
        Rule.ARCH,
        True,
        SetKind.STORE,
        good=CR0_GOOD,
        bad=(0x8000_0000, 0x2000_0001, (1 << 32) | 1),  # PG w/o PE, NW w/o CD, bit 32
    ),
    Reg.CR4: Row(Rule.ARCH, True, SetKind.STORE, good=0x20, bad=(0x2000, 1 << 22, 1 << 32)),
    Reg.CR8: Row(Rule.ARCH, True, SetKind.STORE, good=5),
    Reg.DR3: Row(Rule.ARCH, True, SetKind.STORE, good=0x1234),
    Reg.DR7: Row(Rule.ARCH, True, SetKind.STORE, good=0x401),
    Reg.LDTR: Row(
        Rule.ARCH, True, SetKind.STORE, good=segment(base=0x5000, limit=0x67, selector=0x28, attributes=0x82)
    ),
    Reg.IDTR: Row(Rule.ARCH, True, SetKind.STORE, good=table(base=0x6000, limit=0xFFF)),
    Reg.GDTR: Row(Rule.ARCH, True, SetKind.STORE, good=table(base=0x7000, limit=0x3F)),
    Reg.EFER: Row(
        Rule.ARCH,
        True,
        SetKind.STORE,
        good=EFER_GOOD,
        bad=(0x100, 0x1800, 0x2_0800),  # no NXE, SVME, bit 17
    ),
    Reg.PAT: Row(
        Rule.ARCH,
        True,
        SetKind.STORE,
        good=0x0007_0406_0107_0406,
        bad=(0x0007_0406_0007_0402, 0x0007_0406_0007_0408, 0x0300_0000_0000_0000),
    ),
    Reg.SYSENTER_CS: Row(Rule.ARCH, True, SetKind.STORE, good=0x10),
    Reg.SYSENTER_EIP: Row(Rule.ARCH, True, SetKind.STORE, good=CANON57, bad=CANON_BAD),
    Reg.SYSENTER_ESP: Row(Rule.ARCH, True, SetKind.STORE, good=0xFFFF_FFFF_8100_0000, bad=CANON_BAD),
    Reg.STAR: Row(Rule.ARCH, True, SetKind.STORE, good=0x0023_0010_0000_0000),
    Reg.LSTAR: Row(Rule.ARCH, True, SetKind.STORE, good=CANON57, bad=CANON_BAD),
    Reg.CSTAR: Row(Rule.ARCH, True, SetKind.STORE, good=0xFFFF_8000_0000_1000, bad=CANON_BAD),
    Reg.SFMASK: Row(Rule.ARCH, True, SetKind.STORE, good=0x4700, bad=(1 << 32,)),
    Reg.TSC_AUX: Row(Rule.TSC_AUX, True, SetKind.STORE, good=3),
    Reg.FS: Row(Rule.ARCH, True, SetKind.VALIDATE_REFUSE, good=SEGMENT_GOOD, bad=SEGMENT_BAD),
    Reg.GS: Row(Rule.ARCH, True, SetKind.VALIDATE_REFUSE, good=SEGMENT_GOOD, bad=SEGMENT_BAD),
    Reg.KERNEL_GS_BASE: Row(Rule.ARCH, True, SetKind.VALIDATE_REFUSE, good=CANON57, bad=CANON_BAD),
    Reg.INTERMEDIATE_CR0: Row(
        Rule.NONE, False, SetKind.VALIDATE_REFUSE, good=CR0_GOOD, bad=(0x8000_0000, 0x2000_0001)
    ),
    Reg.INTERMEDIATE_CR4: Row(Rule.NONE, False, SetKind.VALIDATE_REFUSE, good=0x20, bad=(0x2000, 1 << 22)),
    Reg.XSS: Row(Rule.NONE, False, SetKind.VALIDATE_REFUSE, good=0x800, bad=(0x1, 0x2000)),
    **{
        Reg.PL0_SSP + i: Row(
            Rule.NONE, False, SetKind.VALIDATE_REFUSE, good=0xFFFF_FFFF_FFFF_F000, bad=(0x1001, *CANON_BAD)
        )
        for i in range(4)
    },
    Reg.INTERRUPT_SSP_TABLE_ADDR: Row(Rule.NONE, False, SetKind.VALIDATE_REFUSE, good=CANON57, bad=CANON_BAD),
    Reg.APIC_BASE: Row(Rule.NONE, True, SetKind.APIC, bad=(0xFEC0_0900,), bad_status=PARAM),
    Reg.PENDING_EVENT0: Row(
        Rule.PENDING,
        False,
        SetKind.STORE,
        good=PENDING_GP,
        bad=(
            1 | (2 << 16),  # NMI
            1 | 0x100 | (6 << 16),  # #UD with an error code
            1 | (1 << 1) | (13 << 16),  # event type 1
            1 | (22 << 16),  # vector > 21
        ),
    ),
    Reg.VP_ASSIST_PAGE: Row(Rule.NONE, True, SetKind.STORE, good=0x5001, bad=(0x5002,)),
    **{name: Row(Rule.NONE, True, SetKind.STORE, good=value) for name, value in _SYNIC_STORE.items()},
    Reg.SVERSION: Row(Rule.NONE, True, SetKind.REFUSE, good=1),
    Reg.VSM_CODE_PAGE_OFFSETS: Row(Rule.NONE, True, SetKind.REFUSE, good=0x2_600F),
    Reg.VSM_VP_STATUS: Row(Rule.VSM_STATUS, True, SetKind.REFUSE, good=0x3_0001),
    Reg.VSM_PARTITION_STATUS: Row(Rule.VSM_STATUS, True, SetKind.REFUSE, good=0x31_0003),
    Reg.VSM_CAPABILITIES: Row(Rule.VSM_STATUS, True, SetKind.REFUSE, good=0x2_0002),
    # Reserved bits 11-63 -> InvalidParameter (synic ``write_reg``, DOMAIN 2.4).
    Reg.VSM_VINA: Row(Rule.VINA, True, SetKind.STORE, good=0x330, bad=(0x800,), bad_status=PARAM),
    Reg.VSM_PARTITION_CONFIG: Row(
        Rule.PARTITION_CONFIG,
        True,
        SetKind.STORE,
        good=0x1F,
        bad=(0x80, 0xF, 0x3),  # bit 7, mask R|W|KX, mask R only (DOMAIN 3.4)
    ),
    Reg.VSM_VP_SECURE_CONFIG_VTL0: Row(
        Rule.SECURE_CONFIG,
        True,
        SetKind.STORE,
        good=0x1,
        bad=(0x0, 0x5),  # MBEC mismatch, SSS
    ),
    Reg.CR_INTERCEPT_CONTROL: Row(
        Rule.CR_INTERCEPT, True, SetKind.STORE, good=0x4043, bad=(0x8, 1 << 24, 1 << 29)
    ),
    Reg.CR_INTERCEPT_CR0_MASK: Row(Rule.CR_INTERCEPT, True, SetKind.STORE, good=0x8000_0001),
    Reg.CR_INTERCEPT_CR4_MASK: Row(Rule.CR_INTERCEPT, True, SetKind.STORE, good=0x20),
    Reg.CR_INTERCEPT_IA32_MISC_ENABLE_MASK: Row(Rule.CR_INTERCEPT, True, SetKind.STORE, good=0x1),
}

#: DOMAIN 1.3: one copy per VP (DR6 is not gettable or settable, so its sharing does not matter).
SHARED: Final = frozenset(
    {
        *(Reg.RAX + i for i in range(16) if Reg.RAX + i != Reg.RSP),
        Reg.CR2,
        Reg.DR0,
        Reg.DR1,
        Reg.DR2,
        Reg.DR3,
        Reg.XFEM,
    }
)


class Op(enum.Enum):
    """The two hypercalls."""

    GET = "get"
    SET = "set"


class VpCase(enum.Enum):
    """The header's vp_index."""

    SELF = "HV_VP_INDEX_SELF"
    CURRENT = "current"
    OTHER = "other"
    OUT_OF_RANGE = "out-of-range"

    def index(self, current: int) -> int:
        """The vp_index value for a call made on VP ``current``."""
        return {
            VpCase.SELF: HV_VP_INDEX_SELF,
            VpCase.CURRENT: current,
            VpCase.OTHER: (current + 1) % VP_COUNT,
            VpCase.OUT_OF_RANGE: VP_COUNT,
        }[self]


@dataclass(frozen=True)
class Cell:
    """One table cell; ``bad`` is the index into ``Row.bad`` (None: the good value)."""

    caller: Vtl
    target: int | None
    name: int
    op: Op
    vp_case: VpCase
    bad: int | None = None
    partition_id: int = HV_PARTITION_ID_SELF
    access_vsm: bool = True
    tsc_aux: bool = True
    vp: int = 0

    def __str__(self) -> str:
        try:
            name = Reg(self.name).name
        except ValueError:
            name = f"unknown {self.name:#010x}"
        value = "-" if self.op is Op.GET else "good" if self.bad is None else f"bad[{self.bad}]"
        target = "caller's" if self.target is None else f"{self.target}"
        extra = "" if self.partition_id == HV_PARTITION_ID_SELF else f" partition_id={self.partition_id:#x}"
        config = (
            ""
            if self.access_vsm and self.tsc_aux
            else f" access_vsm={self.access_vsm} tsc_aux={self.tsc_aux}"
        )
        return (
            f"vp{self.vp} caller=VTL{int(self.caller)} target={target} {name} {self.op.value} "
            f"value={value} vp_index={self.vp_case.value}{extra}{config}"
        )


def _access(row: Row, cell: Cell, target: int) -> HvStatus:
    """DOMAIN 3.1 per-register rules (header checks already passed, so target <= caller)."""
    caller = cell.caller
    match row.rule:
        case Rule.ARCH | Rule.TSC_AUX:
            if target >= caller:
                return DENIED
            if row.rule is Rule.TSC_AUX and not cell.tsc_aux:
                return PARAM
        case Rule.PENDING:
            if target >= caller:
                return PARAM
        case Rule.VINA:
            if target == Vtl.VTL0:
                return PARAM
        case Rule.CR_INTERCEPT:
            if target != Vtl.VTL1:
                return DENIED
        case Rule.PARTITION_CONFIG:
            if target != Vtl.VTL1:
                return PARAM
            if caller == Vtl.VTL0 and not cell.access_vsm:
                return DENIED
        case Rule.VSM_STATUS:
            if caller == Vtl.VTL0 and not cell.access_vsm:
                return DENIED
        case Rule.NONE | Rule.SECURE_CONFIG:
            pass
    return OK


def expected(cell: Cell) -> HvStatus:
    """The status OpenHCL returns for one single-element call (DOMAIN 3.1 check order)."""
    target = int(cell.caller) if cell.target is None else cell.target
    if target > 2:
        return PARAM
    if cell.partition_id != HV_PARTITION_ID_SELF:
        return DENIED
    if cell.vp_case in (VpCase.OTHER, VpCase.OUT_OF_RANGE):
        return DENIED if cell.op is Op.GET else VP_INDEX  # Appendix B 1
    if target > cell.caller:
        return DENIED
    row = ROWS[cell.name]
    status = _access(row, cell, target)
    if status:
        return status
    if row.rule is Rule.SECURE_CONFIG and target <= Vtl.VTL0:
        return DENIED  # DOMAIN 3.5: the requesting VTL is the *target* VTL (Appendix B 6)
    if cell.op is Op.GET:
        return OK if row.get else PARAM
    bad = cell.bad is not None
    match row.set:
        case SetKind.REFUSE:
            return PARAM
        case SetKind.VALIDATE_REFUSE:
            return VALUE if bad else PARAM
        case SetKind.APIC:
            return row.bad_status if bad else OK
        case SetKind.STORE:
            return row.bad_status if bad else OK


def set_value(cell: Cell, before_apic_base: int) -> int:
    """The value a set cell writes."""
    row = ROWS[cell.name]
    if cell.bad is not None:
        return row.bad[cell.bad]
    if row.set is SetKind.APIC:
        return before_apic_base  # "no change" is the only accepted ApicBase write
    return row.good


def all_cells(*, vp: int = 0, access_vsm: bool = True, tsc_aux: bool = True) -> Iterator[Cell]:
    """Every cell of the table for one configuration and executing VP."""
    for caller, target, name, vp_case in itertools.product(
        (Vtl.VTL0, Vtl.VTL1), (None, 0, 1, 2, 3, 15), ROWS, VpCase
    ):
        for op, bad in ((Op.GET, None), (Op.SET, None), *((Op.SET, i) for i in range(len(ROWS[name].bad)))):
            yield Cell(caller, target, name, op, vp_case, bad, access_vsm=access_vsm, tsc_aux=tsc_aux, vp=vp)


# ---- the synchronous core ---------------------------------------------------------------------------


class Core:
    """A 4-VP partition on the synchronous core, driven like runtime/_steps.py does."""

    def __init__(self, **config: Any) -> None:
        self.config = PartitionConfig(vp_count=VP_COUNT, **config)
        self.supervisor = PartitionSupervisor(0, self.config)
        self.vps = [VpActor(i, self.config, self.supervisor.view) for i in range(VP_COUNT)]

    def run(self, vp: int, action: Any) -> Any:
        """Execute ``action`` on ``vp``; answer its supervisor requests until it completes."""
        result = self.vps[vp].execute(action)
        if isinstance(result, types.GeneratorType):
            reply: Any = None
            while True:
                try:
                    request = result.send(reply)
                except StopIteration as stop:
                    result = stop.value
                    break
                reply, effects = self.supervisor.handle(request)
                for target, control in effects:
                    self.vps[target].deliver(control)
        return result


def prepared(caller: Vtl, *, vp: int = 0, **config: Any) -> Core:
    """VSM enabled (MBEC) with VTL1 on VP0 (and on ``vp``), running ``caller`` on ``vp``."""
    core = Core(**config)
    assert core.run(0, EnablePartitionVtl(target_vtl=Vtl.VTL1, enable_mbec=True)).status == OK
    assert core.run(0, EnableVpVtl(vp_index=0, target_vtl=Vtl.VTL1, context=CONTEXT)).status == OK
    assert isinstance(core.run(0, VtlCall()), VtlSwitched)
    if vp != 0:
        assert core.run(0, EnableVpVtl(vp_index=vp, target_vtl=Vtl.VTL1, context=CONTEXT)).status == OK
        start = StartVirtualProcessor(vp_index=vp, target_vtl=Vtl.VTL0, context=CONTEXT_VTL0)
        assert core.run(0, start).status == OK
        core.run(vp, GetVpRegisters(names=[Reg.VSM_CODE_PAGE_OFFSETS]))  # VP ``vp`` runs VTL1 first
    if caller == Vtl.VTL0:
        assert isinstance(core.run(vp, VtlReturn(fast=True)), VtlSwitched)
    state = core.vps[vp].state
    assert state.active_vtl == caller
    assert state.vtl1 is not None
    state.commit_all()
    check_vp_invariants(state)
    return core


def digest(core: Core, vp: int, caller: Vtl) -> str:
    """sha256 of the VP's complete state and the partition view, minus the hypercall's own output.

    Excluded: RAX and RDX (the result, checked separately) and the caller's RIP (+ 3), with its
    VMCS field GUEST_RIP (encoding 0x681E).
    """
    st = core.vps[vp].state
    result_regs = frozenset({Reg.RAX, Reg.RDX})
    parts: list[object] = [
        ("vp", st.index, st.active_vtl, st.running, st.failure),
        ("shared", _regs(st.shared.committed, result_regs), _regs(st.shared.staged, result_regs)),
    ]
    for vtl in st.vtls:
        skip = frozenset({Reg.RIP}) if vtl.vtl == caller else frozenset()
        parts.append(
            (
                f"vtl{vtl.vtl}",
                _regs(vtl.regs.committed, skip),
                _regs(vtl.regs.staged, skip),
                vtl.registration,
                vtl.staged_registration,
                sorted((f, v) for f, v in vtl.vmcs.items() if not (skip and f == GUEST_RIP)),
                (vtl.entry_reason, vtl.return_rax, vtl.return_rcx, vtl.vina_asserted, vtl.sint0_message),
            )
        )
    vtl1 = st.vtl1
    if vtl1 is not None:
        parts.append(("vtl1", [(slot, getattr(vtl1, slot)) for slot in type(vtl1).__slots__]))
    parts.append(("partition", core.supervisor.view()))
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _regs(items: dict[int, int], skip: frozenset[int]) -> list[tuple[int, int]]:
    return sorted((k, v) for k, v in items.items() if k not in skip)


def _file_value(core: Core, vp: int, target: int, name: int) -> int:
    st = core.vps[vp].state
    if name in SHARED:
        return st.shared.read(name)
    return st.vtls[target].regs.read(name)


def expected_get_value(core: Core, cell: Cell, target: int) -> int:
    """The value a successful get must return (fresh partition of ``prepared``)."""
    special = {
        Reg.VSM_CODE_PAGE_OFFSETS: 0x2_600F,
        Reg.VSM_CAPABILITIES: 0x2_0002,  # DenyLowerVtlStartup | MBEC mask {VTL0}, DR6 not shared
        Reg.VSM_PARTITION_STATUS: 0x31_0003,  # Enabled {0,1}, max VTL 1, MBEC {0,1}
        # ActiveVtl = the caller, VP MBEC not configured yet, VTL1 enabled on this VP.
        Reg.VSM_VP_STATUS: 0x3_0000 | int(cell.caller),
        Reg.VSM_PARTITION_CONFIG: 0xF << 1,  # protections off, VTL0 default mask RWX
        Reg.VSM_VP_SECURE_CONFIG_VTL0: 0x1,  # partition MBEC, no TLB lock
        Reg.CR_INTERCEPT_CONTROL: 0,
        Reg.CR_INTERCEPT_CR0_MASK: 0,
        Reg.CR_INTERCEPT_CR4_MASK: 0,
        Reg.CR_INTERCEPT_IA32_MISC_ENABLE_MASK: 0,
    }
    if cell.name in special:
        return special[cell.name]
    return _file_value(core, cell.vp, target, cell.name)


def expected_stored(core: Core, cell: Cell, target: int, value: int) -> int:
    """Where and how a successful set lands (DOMAIN 3.2 apply semantics, 3.9 derivation)."""
    if cell.name == Reg.CR0:
        return (value & ~0x1FFA_FFC0) | 0x10  # reserved low bits dropped, ET forced (Appendix B 4)
    if cell.name == Reg.EFER:
        pg = _file_value(core, cell.vp, target, Reg.CR0) & 0x8000_0000
        lma = 0x400 if value & 0x100 and pg else 0
        return (value & ~0x400) | lma  # LMA := LME and CR0.PG
    return value


def stored(core: Core, cell: Cell, target: int) -> int:
    """The value found at the place a set of ``cell.name`` writes to."""
    st = core.vps[cell.vp].state
    vtl1 = st.vtl1
    assert vtl1 is not None
    view = core.supervisor.view().vtl1
    assert view is not None
    match cell.name:
        case Reg.PENDING_EVENT0:
            return vtl1.pending_event or 0
        case Reg.VSM_PARTITION_CONFIG:
            return (
                int(view.protections_enabled)
                | (view.vtl0_default_protections << 1)
                | (int(view.zero_memory_on_reset) << 5)
                | (int(view.deny_lower_vtl_startup) << 6)
            )
        case Reg.VSM_VP_SECURE_CONFIG_VTL0:
            return int(vtl1.vp_mbec_enabled) | (int(vtl1.tlb_locked) << 1)
        case Reg.CR_INTERCEPT_CONTROL:
            return vtl1.cr_intercept_control
        case Reg.CR_INTERCEPT_CR0_MASK:
            return vtl1.cr0_mask
        case Reg.CR_INTERCEPT_CR4_MASK:
            return vtl1.cr4_mask
        case Reg.CR_INTERCEPT_IA32_MISC_ENABLE_MASK:
            return vtl1.misc_enable_mask
    return _file_value(core, cell.vp, target, cell.name)


def _action(cell: Cell, value: int) -> GetVpRegisters | SetVpRegisters:
    vp_index = cell.vp_case.index(cell.vp)
    if cell.op is Op.GET:
        return GetVpRegisters(
            names=[cell.name], partition_id=cell.partition_id, vp_index=vp_index, target_vtl=cell.target
        )
    return SetVpRegisters(
        registers=[RegisterAssoc(name=cell.name, value=value)],
        partition_id=cell.partition_id,
        vp_index=vp_index,
        target_vtl=cell.target,
    )


def _result_registers(core: Core, vp: int) -> tuple[int, int, int]:
    st = core.vps[vp].state
    return st.shared.read(Reg.RAX), st.shared.read(Reg.RDX), st.vtls[st.active_vtl].regs.read(Reg.RIP)


def run_cell(cell: Cell, core: Core | None = None) -> tuple[HypercallResult, list[str], bool]:
    """Run one cell (on a freshly prepared core unless given one).

    Returns the result, every problem found, and whether ``core`` is still as ``prepared`` left it
    apart from RAX/RDX/RIP (so the next cell of the same caller may reuse it).
    """
    if core is None:
        core = prepared(cell.caller, vp=cell.vp, access_vsm=cell.access_vsm, tsc_aux=cell.tsc_aux)
    st = core.vps[cell.vp].state
    st.commit_all()  # a commit point (as an inspection is): the previous call's RAX/RIP land
    target = int(cell.caller) if cell.target is None else cell.target
    file_vtl = target if target <= 1 else 0
    value = set_value(cell, st.vtls[file_vtl].regs.read(Reg.APIC_BASE))
    want = expected(cell)
    want_value = expected_get_value(core, cell, target) if want == OK and cell.op is Op.GET else None
    want_stored = expected_stored(core, cell, target, value) if want == OK and cell.op is Op.SET else None
    before = digest(core, cell.vp, cell.caller)
    rax, rdx, rip = _result_registers(core, cell.vp)
    long_mode = cell.caller == Vtl.VTL1 or cell.vp != 0  # VTL0 of VP0 is still at reset (real mode)

    result = core.run(cell.vp, _action(cell, value))
    problems: list[str] = []
    if not isinstance(result, HypercallResult):
        return result, [f"{cell}: expected a HypercallResult, got {result!r}"], False
    if result.status != want:
        problems.append(f"{cell}: expected {want.name}, got {HvStatus(result.status).name}")
    reps = 1 if want == OK else 0
    if result.reps_completed != reps:
        problems.append(f"{cell}: expected {reps} reps, got {result.reps_completed}")
    changed = cell.op is Op.SET and result.status == OK
    if cell.op is Op.GET:
        want_values = [] if want_value is None else [want_value]
        if result.values != want_values:
            problems.append(f"{cell}: expected values {[hex(v) for v in want_values]}, got {result.values}")
    elif want_stored is not None and changed:
        got = stored(core, cell, target)
        if got != want_stored:
            problems.append(f"{cell}: expected {want_stored:#x} written, found {got:#x}")
    if not changed and digest(core, cell.vp, cell.caller) != before:
        status = HvStatus(result.status).name
        problems.append(f"{cell}: the call ({status}) changed VP or partition state (sha256 differs)")
    # The hypercall result (DOMAIN 2.1 ABI) and RIP + 3 are the only other effects.
    output = int(result.status) | (result.reps_completed << 32)
    got_rax, got_rdx, got_rip = _result_registers(core, cell.vp)
    want_rax = output if long_mode else (rax & ~0xFFFF_FFFF) | (output & 0xFFFF_FFFF)
    want_rdx = rdx if long_mode else (rdx & ~0xFFFF_FFFF) | (output >> 32)
    if (got_rax, got_rdx, got_rip) != (want_rax, want_rdx, rip + 3):
        problems.append(f"{cell}: result registers RAX/RDX/RIP = {got_rax:#x}/{got_rdx:#x}/{got_rip:#x}")
    if changed:
        check_vp_invariants(st)
    return result, problems, not changed and not problems


def run_table(cells: Iterable[Cell]) -> tuple[int, list[str]]:
    """Run every cell; reuse a prepared core while the cells leave it unchanged (digest-checked)."""
    cores: dict[tuple[Vtl, int, bool, bool], Core] = {}
    problems: list[str] = []
    count = 0
    for cell in cells:
        key = (cell.caller, cell.vp, cell.access_vsm, cell.tsc_aux)
        core = cores.pop(key, None) or prepared(
            cell.caller, vp=cell.vp, access_vsm=cell.access_vsm, tsc_aux=cell.tsc_aux
        )
        _, found, reusable = run_cell(cell, core)
        if reusable:
            cores[key] = core
        problems += found
        count += 1
    return count, problems


# ---- the tests --------------------------------------------------------------------------------------


def test_reference_table_covers_every_register_name() -> None:
    """The reference table has one row per HvRegisterName member plus one unknown name."""
    assert set(ROWS) == {*Reg, UNKNOWN_NAME}


def test_access_table_default_partition() -> None:
    """Every cell on VP0 with AccessVsm and TSC_AUX matches the DOMAIN.md reference table."""
    count, problems = run_table(all_cells())
    assert count > 14_000
    assert not problems, f"{len(problems)} problems in {count} cells:\n" + "\n".join(problems)


def test_access_table_without_access_vsm_and_tsc_aux() -> None:
    """Every cell with AccessVsm and TSC_AUX withheld (VTL0 status reads and TscAux change)."""
    names = {name for name, row in ROWS.items() if row.rule in CONFIG_RULES} | {Reg.RIP, Reg.SINT0}
    count, problems = run_table(c for c in all_cells(access_vsm=False, tsc_aux=False) if c.name in names)
    assert not problems, f"{len(problems)} problems in {count} cells:\n" + "\n".join(problems)


def test_access_table_on_an_application_processor() -> None:
    """A slice of the table on VP1 (VTL0 in long mode there): vp_index resolves to VP1 itself."""
    names = (Reg.RIP, Reg.EFER, Reg.FS, Reg.PENDING_EVENT0, Reg.VSM_VP_STATUS, Reg.CR_INTERCEPT_CONTROL)
    count, problems = run_table(cell for cell in all_cells(vp=1) if cell.name in names)
    assert not problems, f"{len(problems)} problems in {count} cells:\n" + "\n".join(problems)


def test_partition_id_not_self() -> None:
    """partition_id != SELF is AccessDenied, after the VTL value check and before the VP index."""
    cells = [
        Cell(caller, target, name, op, vp_case, partition_id=partition_id)
        for caller, target, name, op, vp_case, partition_id in itertools.product(
            (Vtl.VTL0, Vtl.VTL1),
            (None, 0, 1, 2, 15),
            (Reg.RIP, Reg.SINT0),
            Op,
            VpCase,
            (0, 1, HV_PARTITION_ID_SELF - 1),
        )
    ]
    _, problems = run_table(cells)
    assert not problems, "\n".join(problems)


# ---- rep semantics (DOMAIN 3.12) --------------------------------------------------------------------


def test_set_prefix_stays_applied() -> None:
    """SetVpRegisters stops at the first failing element; the prefix stays, reps = rep_start + k."""
    core = prepared(Vtl.VTL1)
    st = core.vps[0].state
    rip0 = st.vtls[0].regs.read(Reg.RIP)
    batch = [
        RegisterAssoc(name=Reg.RSP, value=0x7000),
        RegisterAssoc(name=Reg.CR4, value=0x20),
        RegisterAssoc(name=Reg.CR0, value=0x8000_0000),  # PG without PE
        RegisterAssoc(name=Reg.RIP, value=0x1234),
    ]
    result = core.run(0, SetVpRegisters(registers=batch, target_vtl=0))
    assert result == HypercallResult(status=VALUE, reps_completed=2)
    assert (st.vtls[0].regs.read(Reg.RSP), st.vtls[0].regs.read(Reg.CR4)) == (0x7000, 0x20)
    assert st.vtls[0].regs.read(Reg.RIP) == rip0

    core = prepared(Vtl.VTL1)
    st = core.vps[0].state
    rsp0 = st.vtls[0].regs.read(Reg.RSP)
    result = core.run(0, SetVpRegisters(registers=batch, target_vtl=0, rep_start=1))
    assert result == HypercallResult(status=VALUE, reps_completed=2)
    assert (st.vtls[0].regs.read(Reg.RSP), st.vtls[0].regs.read(Reg.CR4)) == (rsp0, 0x20)


def test_set_prefix_with_access_failure_and_supervisor_round_trips() -> None:
    """A refused element mid-batch and supervisor-applied elements keep the prefix semantics."""
    core = prepared(Vtl.VTL1)
    st = core.vps[0].state
    batch = [
        RegisterAssoc(name=Reg.VSM_VINA, value=0x330),
        RegisterAssoc(name=Reg.VSM_PARTITION_CONFIG, value=0x1F),
        RegisterAssoc(name=Reg.VSM_PARTITION_CONFIG, value=0x1E),  # protections are write-once
        RegisterAssoc(name=Reg.SINT0, value=0x2_0030),
    ]
    assert core.run(0, SetVpRegisters(registers=batch)) == HypercallResult(status=VALUE, reps_completed=2)
    view = core.supervisor.view().vtl1
    assert view is not None
    assert view.protections_enabled
    assert st.vtls[1].regs.read(Reg.VSM_VINA) == 0x330
    assert st.vtls[1].regs.read(Reg.SINT0) == PRIVATE_RESET[Reg.SINT0]

    core = prepared(Vtl.VTL1)
    st = core.vps[0].state
    batch = [RegisterAssoc(name=Reg.RIP, value=0x4000), RegisterAssoc(name=Reg.CR_INTERCEPT_CONTROL, value=1)]
    result = core.run(0, SetVpRegisters(registers=batch, target_vtl=0))
    assert result == HypercallResult(status=DENIED, reps_completed=1)
    assert st.vtls[0].regs.read(Reg.RIP) == 0x4000
    assert st.vtl1 is not None
    assert st.vtl1.cr_intercept_control == 0


def test_set_success_reports_every_rep() -> None:
    """A successful batch reports rep_count completed reps, and rep_start skips elements."""
    core = prepared(Vtl.VTL1)
    st = core.vps[0].state
    rsp0 = st.vtls[0].regs.read(Reg.RSP)
    batch = [RegisterAssoc(name=Reg.RSP, value=0x7000), RegisterAssoc(name=Reg.RIP, value=0x5000)]
    result = core.run(0, SetVpRegisters(registers=batch, target_vtl=0, rep_start=1))
    assert result == HypercallResult(status=OK, reps_completed=2)
    assert (st.vtls[0].regs.read(Reg.RSP), st.vtls[0].regs.read(Reg.RIP)) == (rsp0, 0x5000)


def test_get_returns_the_completed_prefix() -> None:
    """GetVpRegisters returns the values of the successful prefix, from rep_start on."""
    core = prepared(Vtl.VTL1)
    st = core.vps[0].state
    names = [Reg.RIP, Reg.RSP, Reg.RAX, Reg.CR0, Reg.PENDING_EVENT0, Reg.RIP]
    want = [st.vtls[0].regs.read(Reg.RIP), st.vtls[0].regs.read(Reg.RSP), st.shared.read(Reg.RAX)]
    want.append(st.vtls[0].regs.read(Reg.CR0))
    before = digest(core, 0, Vtl.VTL1)
    result = core.run(0, GetVpRegisters(names=names, target_vtl=0))
    assert result == HypercallResult(status=PARAM, reps_completed=4, values=want)
    want[2] = st.shared.read(Reg.RAX)  # the first call's result
    result = core.run(0, GetVpRegisters(names=names, target_vtl=0, rep_start=2))
    assert result == HypercallResult(status=PARAM, reps_completed=4, values=want[2:])
    assert digest(core, 0, Vtl.VTL1) == before
    want[3] = st.vtls[0].regs.read(Reg.CR0)
    ok = core.run(0, GetVpRegisters(names=names[:4], target_vtl=0, rep_start=3))
    assert ok == HypercallResult(status=OK, reps_completed=4, values=want[3:])


def test_empty_list_or_rep_start_past_the_end_is_invalid_input() -> None:
    """rep_start >= count or an empty list: InvalidHypercallInput, 0 reps, nothing changed."""
    calls: list[GetVpRegisters | SetVpRegisters] = []
    for target in (None, 0, 15):
        calls += [
            GetVpRegisters(names=[], target_vtl=target),
            GetVpRegisters(names=[Reg.RIP], target_vtl=target, rep_start=1),
            GetVpRegisters(names=[Reg.RIP, Reg.RSP], target_vtl=target, rep_start=5, vp_index=VP_COUNT),
            SetVpRegisters(registers=[], target_vtl=target),
            SetVpRegisters(registers=[RegisterAssoc(name=Reg.RIP, value=1)], target_vtl=target, rep_start=1),
            SetVpRegisters(
                registers=[RegisterAssoc(name=Reg.RIP, value=1)],
                target_vtl=target,
                rep_start=2,
                partition_id=0,
            ),
        ]
    for caller in (Vtl.VTL0, Vtl.VTL1):
        for call in calls:
            core = prepared(caller)
            before = digest(core, 0, caller)
            result = core.run(0, call)
            assert result == HypercallResult(status=INPUT, reps_completed=0), (caller, call)
            assert digest(core, 0, caller) == before, (caller, call)


# ---- the same cells through the public runtime API ---------------------------------------------------


def _runtime_sample() -> list[Cell]:
    """40 cells: one per distinct expected status first, then a seeded random draw."""
    cells = list(all_cells())
    picked: dict[tuple[HvStatus, Op], Cell] = {}
    for cell in cells:
        picked.setdefault((expected(cell), cell.op), cell)
    rest = [cell for cell in cells if cell not in picked.values()]
    return [*picked.values(), *random.Random(1).sample(rest, 40 - len(picked))]


async def test_runtime_path_agrees_with_the_core() -> None:
    """40 cells through ``await vp.execute``: same outcome as the core and the reference table."""
    sample = _runtime_sample()
    names = [name for name in Reg if name in PRIVATE_RESET or name in SHARED_RESET]
    problems: list[str] = []
    async with checked_runtime() as rt:
        for cell in sample:
            core_result, core_problems, _ = run_cell(cell)
            problems += core_problems
            part = await rt.create_partition(vp_count=VP_COUNT)
            vp = part.vp(0)
            await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1, enable_mbec=True))
            await vp.execute(EnableVpVtl(vp_index=0, target_vtl=Vtl.VTL1, context=CONTEXT))
            await vp.execute(VtlCall())
            if cell.caller == Vtl.VTL0:
                await vp.execute(VtlReturn(fast=True))
            before = [await vp.registers(vtl, names) for vtl in (Vtl.VTL0, Vtl.VTL1)]
            apic = before[0][Reg.APIC_BASE]
            result = await vp.execute(_action(cell, set_value(cell, apic)))
            after = [await vp.registers(vtl, names) for vtl in (Vtl.VTL0, Vtl.VTL1)]
            if result != core_result:
                problems.append(f"{cell}: runtime gave {result!r}, core gave {core_result!r}")
            if not isinstance(result, HypercallResult) or result.status != expected(cell):
                problems.append(f"{cell}: runtime gave {result!r}, expected {expected(cell).name}")
            elif cell.op is Op.GET or result.status != OK:
                for vtl in (0, 1):
                    skip = {Reg.RAX, Reg.RDX} | ({Reg.RIP} if vtl == cell.caller else set())
                    changed = [
                        Reg(n).name for n in names if n not in skip and before[vtl][n] != after[vtl][n]
                    ]
                    if changed:
                        problems.append(f"{cell}: VTL{vtl} registers changed: {changed}")
            await part.stop()
    assert len(sample) == 40
    assert not problems, "\n".join(problems)
