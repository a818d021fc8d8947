"""Commit policies: eager and batched commits give one guest-visible history (RELIABILITY A7, C2, B8).

The foundation issue's property: draw a whole scenario of SetVpRegisters / GetVpRegisters /
VtlCall / VtlReturn (plus VTL-return control writes and inspections), play it on a fresh runtime
once per commit policy, and compare the transcripts. A transcript is every outcome plus, after
each step, what the guest can see: VTL0's registers read by VTL1 with GetVpRegisters, or VTL0's
own EFER read with RDMSR. The runtime checks every invariant after every step and commit
(``check_invariants=True``), so a violation reaches the test as ``InternalError``. VM-entry
failures are part of the history (DOMAIN 7.2): when a VTL's committed state fails the
guest-state checks at its next entry, the partition ends, and the transcript records the
``PartitionFailed`` reason (every failed check, by number and name) and stops there; both
policies must fail at the same step for the same reasons.

TDCALL counts (DOMAIN 7.1): eager is OpenHCL's access pattern (tests/actors/
test_tdcall_accounting.py re-derives it); batched is a write-back that reads nothing and writes
one TDG.VP.WR per changed VMCS field at commit. Its reference here is *write-through*: the
batched policy with ``batch_max_updates=1``, a commit after every update. The modelled VMCS is
a pure function of the committed registers (B8, checked by the invariants) and batched commits
at a subset of write-through's points, so per field batched changes at most as often
(triangle inequality): ``batched <= write-through`` always, and OpenHCL's pattern, which
rewrites every field it touches, writes at least as much again. Batched is strictly fewer when,
inside one batched commit interval (VTL1 running, no count- or time-closed batch), the probes
show a VMCS-backed VTL0 register change more often than batched can change its field
(``_Coalescing``): e.g. VTL1 sets VTL0's EFER and sets it back before VTL0 runs again.

Cross-backend: each example also replays the batched run on the other backend and expects the
very same ``Run`` (counters included). Teeth: the last three tests break the model on purpose.
"""

from __future__ import annotations

import functools
import operator
from typing import TYPE_CHECKING, Final, TypeAlias

import anyio
import msgspec
import pytest
import trio.testing
from hypothesis import event, given, settings, strategies as st

import actors._state
from actors import ActorCrashed, CommitPolicy, InternalError, PartitionFailed, TdxL2State
from actors._registers import PRIVATE_RESET, SHARED_RESET
from protocol import (
    HV_VP_INDEX_SELF,
    Completed,
    EnablePartitionVtl,
    EnableVpVtl,
    GetVpRegisters,
    HvRegisterName as Reg,
    HvStatus,
    HvVtlEntryReason,
    HypercallResult,
    Outcome,
    Rdmsr,
    RegisterAssoc,
    SetVpRegisters,
    Vtl,
    VtlCall,
    VtlReturn,
    VtlSwitched,
    WriteVtlControl,
)
from protocol._x86 import (
    CR0_AM,
    CR0_CD,
    CR0_EM,
    CR0_ET,
    CR0_MP,
    CR0_NE,
    CR0_NW,
    CR0_PE,
    CR0_PG,
    CR0_TS,
    CR0_WP,
    CR4_CET,
    CR4_DE,
    CR4_FSGSBASE,
    CR4_LA57,
    CR4_MCE,
    CR4_OSFXSR,
    CR4_OSXMMEXCPT,
    CR4_OSXSAVE,
    CR4_PAE,
    CR4_PCIDE,
    CR4_PGE,
    CR4_PKE,
    CR4_PSE,
    CR4_SMAP,
    CR4_SMEP,
    CR4_UMIP,
    CR4_VME,
    CR4_VMXE,
    EFER_FFXSR,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    EFER_SCE,
    EFER_SVME,
    EFER_TCE,
    U64_MASK,
    U128_MASK,
    Msr,
)
from runtime import Vp, open_runtime
from tests.guest import long_mode_context

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Sequence

# ---- scenarios ------------------------------------------------------------------------------------

#: A batch window no run lasts: batched commits come only from VTL entries, inspections and counts.
_NEVER: Final = 3600.0
#: ``batch_max_updates`` no scenario reaches (each op stages fewer than 8 updates).
_UNBOUNDED: Final = 1 << 20
_SAFETY_NET: Final = 30.0  # wall-clock seconds; a hung run fails instead of stalling the suite


class Inspect(msgspec.Struct, frozen=True):
    """Simulator-side ``vp.tdx_state(vtl)``: a commit point, never guest-visible."""

    vtl: Vtl


class Idle(msgspec.Struct, frozen=True):
    """The test waits ``windows`` batch windows of the runtime's clock (the flusher may commit)."""

    windows: int = 3


Op: TypeAlias = SetVpRegisters | GetVpRegisters | VtlCall | VtlReturn | WriteVtlControl | Inspect | Idle


class Scenario(msgspec.Struct, frozen=True, kw_only=True):
    """One drawn scenario: the ops after bring-up, and how batched commits are bounded."""

    ops: list[Op]
    batch_max_updates: int = _UNBOUNDED
    batch_window: float = _NEVER


#: Bring-up on VP 0: VSM with MBEC and VTL1 in long mode; then a VtlCall (VTL0 stays at reset).
_BRING_UP: Final = (
    EnablePartitionVtl(target_vtl=Vtl.VTL1, enable_mbec=True),
    EnableVpVtl(vp_index=HV_VP_INDEX_SELF, target_vtl=Vtl.VTL1, context=long_mode_context()),
)
#: What VTL1 reads back from VTL0 after every step (RIP first: the strictness rule uses it).
_PROBED: Final = (
    Reg.RIP,
    Reg.RSP,
    Reg.RFLAGS,
    Reg.CR0,
    Reg.CR4,
    Reg.CR8,
    Reg.EFER,
    Reg.PAT,
    Reg.LSTAR,
    Reg.SYSENTER_EIP,
    Reg.DR7,
    Reg.RAX,
    Reg.RCX,
)
#: Indexes in ``_PROBED`` of registers whose value is one VMCS field's value (CR0/CR4 read
#: shadows, GUEST_EFER, GUEST_PAT, GUEST_SYSENTER_EIP, GUEST_DR7). RIP, RSP and RFLAGS are not
#: VMCS fields (DOMAIN 7.1).
_VMCS_PROBED: Final = tuple(
    _PROBED.index(n) for n in (Reg.CR0, Reg.CR4, Reg.EFER, Reg.PAT, Reg.SYSENTER_EIP, Reg.DR7)
)
_CALLED: Final = VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=HvVtlEntryReason.VTL_CALL)
_ALL_REGISTERS: Final = tuple(Reg(name) for name in sorted(PRIVATE_RESET.keys() | SHARED_RESET.keys()))
_OTHER_BACKEND: Final = {"asyncio": "trio", "trio": "asyncio"}


# ---- strategies -----------------------------------------------------------------------------------


def _or_flags(
    bases: Sequence[int], extras: Sequence[int], *, min_extras: int = 0, max_extras: int = 3
) -> st.SearchStrategy[int]:
    """One of ``bases`` ORed with a few of ``extras``."""
    return st.builds(
        lambda base, more: functools.reduce(operator.or_, more, base),
        st.sampled_from(bases),
        st.sets(st.sampled_from(extras), min_size=min_extras, max_size=max_extras),
    )


_U64 = st.integers(0, U64_MASK)
#: RFLAGS that pass VM entry check 4 (bit 1 set; 63:22, 15, 5, 3 and VM clear), mostly; and any.
_RFLAGS = st.one_of(
    st.integers(0, (1 << 22) - 1).map(lambda v: (v | 0x2) & ~(1 << 15 | 1 << 5 | 1 << 3 | 1 << 17)),
    st.integers(0, (1 << 22) - 1).map(lambda v: (v | 0x2) & ~(1 << 15 | 1 << 5 | 1 << 3 | 1 << 17)),
    _U64,
)
_EFER_VALID = _or_flags([EFER_NXE, EFER_LME | EFER_NXE], [EFER_SCE, EFER_LMA, EFER_TCE, EFER_LME])
_EFER_INVALID = st.one_of(
    _or_flags([EFER_LME, EFER_LME | EFER_LMA, 0], [EFER_SCE, EFER_LMA]),  # NXE clear
    _or_flags([EFER_NXE | EFER_LME], [EFER_SVME, EFER_FFXSR, 0x2, 0x200, 1 << 16, 1 << 40], min_extras=1),
)
_CR0_VALID = _or_flags(
    [CR0_PE | CR0_PG | CR0_ET, CR0_PE | CR0_ET, CR0_PE | CR0_PG, CR0_PE, CR0_ET, 0],
    [CR0_NE, CR0_MP, CR0_EM, CR0_TS, CR0_WP, CR0_AM, CR0_CD, CR0_CD | CR0_NW, 0x40, 0x1000, 1 << 17, 1 << 28],
)
_CR0_INVALID = st.one_of(
    _or_flags([CR0_PG, CR0_PG | CR0_ET], [CR0_NE, CR0_WP]),  # PG without PE
    _or_flags([CR0_NW | CR0_PE, CR0_NW | CR0_PE | CR0_PG], [CR0_ET, CR0_NE]),  # NW without CD
    _or_flags([CR0_PE | CR0_PG | CR0_ET], [1 << 32, 1 << 40, 1 << 63], min_extras=1),
)
_CR4_ALLOWED = [
    CR4_PSE,
    CR4_PGE,
    CR4_OSFXSR,
    CR4_OSXMMEXCPT,
    CR4_FSGSBASE,
    CR4_SMEP,
    CR4_SMAP,
    CR4_MCE,
    CR4_LA57,
    CR4_PCIDE,
    CR4_OSXSAVE,
    CR4_UMIP,
    CR4_VME,
    CR4_DE,
    CR4_CET,
]
_CR4_VALID = _or_flags([CR4_PAE, 0], _CR4_ALLOWED)
_CR4_INVALID = st.builds(
    operator.or_,
    _CR4_VALID,
    st.sampled_from([CR4_PKE, CR4_VMXE, 1 << 14, 1 << 15, 1 << 19, 1 << 24, 1 << 32]),
)
_PAT_TYPES = st.sampled_from([0, 1, 4, 5, 6, 7])
_PAT_VALID = st.lists(_PAT_TYPES, min_size=8, max_size=8).map(lambda b: int.from_bytes(bytes(b), "little"))
_PAT_INVALID = st.builds(
    lambda pat, byte, bad: (pat & ~(0xFF << (8 * byte))) | (bad << (8 * byte)),
    _PAT_VALID,
    st.integers(0, 7),
    st.sampled_from([2, 3, 8, 0x80]),
)
_LOW_56 = st.integers(0, (1 << 56) - 1)
_LSTAR_CANONICAL = st.one_of(_LOW_56, _LOW_56.map(lambda v: v | (U64_MASK & ~((1 << 56) - 1))))
_LSTAR_NON_CANONICAL = st.builds(operator.or_, _LOW_56, st.integers(56, 62).map(lambda bit: 1 << bit))
_ADDRESS = st.one_of(st.integers(0, 0xFFFF_FFFF), _U64, st.integers(0, U128_MASK))


def _element(name: Reg, *values: st.SearchStrategy[int]) -> st.SearchStrategy[RegisterAssoc]:
    return st.builds(RegisterAssoc, name=st.just(int(name)), value=st.one_of(*values))


_ELEMENT = st.one_of(
    _element(Reg.EFER, _EFER_VALID, _EFER_VALID, _EFER_INVALID),
    _element(Reg.CR0, _CR0_VALID, _CR0_VALID, _CR0_INVALID),
    _element(Reg.CR4, _CR4_VALID, _CR4_VALID, _CR4_INVALID),
    _element(Reg.RIP, _ADDRESS),
    _element(Reg.RIP, _ADDRESS),
    _element(Reg.RSP, _ADDRESS),
    _element(Reg.RFLAGS, _RFLAGS),
    _element(Reg.CR8, st.integers(0, 0x1F)),
    _element(Reg.PAT, _PAT_VALID, _PAT_INVALID),
    _element(Reg.LSTAR, _LSTAR_CANONICAL, _LSTAR_NON_CANONICAL),
    _element(Reg.SYSENTER_EIP, _LSTAR_CANONICAL, _LSTAR_CANONICAL, _LSTAR_NON_CANONICAL),
    _element(Reg.SYSENTER_EIP, st.sampled_from([0x1000, 0x2000])),  # often back and forth
    _element(Reg.DR7, st.sampled_from([0x400, 0x401, 0x700])),
    _element(Reg.RAX, _U64),  # not settable: InvalidParameter ends the batch
)
#: Mostly VTL0 (the legal target from VTL1); the caller's VTL, VTL1, VTL2 and a bad value sometimes.
_TARGET = st.sampled_from([0, 0, 0, 0, 0, 0, 0, 0, None, 1, 2, 5])


@st.composite
def _set_vp_registers(draw: st.DrawFn) -> SetVpRegisters:
    registers = draw(st.lists(_ELEMENT, min_size=1, max_size=5))
    rep_start = draw(st.one_of(st.just(0), st.just(0), st.integers(0, len(registers))))
    return SetVpRegisters(registers=registers, target_vtl=draw(_TARGET), rep_start=rep_start)


@st.composite
def _get_vp_registers(draw: st.DrawFn) -> GetVpRegisters:
    names = draw(st.lists(st.sampled_from([int(n) for n in _PROBED]), min_size=1, max_size=5))
    rep_start = draw(st.one_of(st.just(0), st.just(0), st.integers(0, len(names))))
    return GetVpRegisters(names=names, target_vtl=draw(_TARGET), rep_start=rep_start)


_VTL_CALL = st.builds(
    VtlCall,
    input=st.one_of(st.just(0), st.just(0), st.just(0), st.integers(1, U64_MASK)),
    control_flags=st.sampled_from([0, 0, 0, 0, 0, 1 << 16, 1 << 27]),
)
_VTL_RETURN = st.builds(
    VtlReturn,
    fast=st.booleans(),
    input=st.sampled_from([None, None, None, None, None, 0, 1, 2, 3]),
    control_flags=st.sampled_from([0, 0, 0, 0, 0, 1 << 16]),
)
_WRITE_VTL_CONTROL = st.builds(WriteVtlControl, return_rax=_U64, return_rcx=_U64)
_INSPECT = st.builds(Inspect, st.sampled_from([Vtl.VTL0, Vtl.VTL1]))
_GUEST_OP: st.SearchStrategy[Op] = st.one_of(
    _set_vp_registers(),
    _set_vp_registers(),
    _set_vp_registers(),
    _set_vp_registers(),
    _get_vp_registers(),
    _VTL_CALL,
    _VTL_RETURN,
    _WRITE_VTL_CONTROL,
    _INSPECT,
)
_BATCH_MAX_UPDATES = st.sampled_from([1, 2, 3, 5, 64, _UNBOUNDED, _UNBOUNDED, _UNBOUNDED])

SCENARIOS = st.builds(
    Scenario, ops=st.lists(_GUEST_OP, min_size=1, max_size=24), batch_max_updates=_BATCH_MAX_UPDATES
)
#: With idle time: the batch window closes mid-scenario and the flusher commits.
WINDOWED_SCENARIOS = st.builds(
    Scenario,
    ops=st.lists(st.one_of(_GUEST_OP, st.builds(Idle, st.integers(2, 4))), min_size=1, max_size=16),
    batch_max_updates=_BATCH_MAX_UPDATES,
    batch_window=st.just(0.001),
)


# ---- playing a scenario ---------------------------------------------------------------------------


class Run(msgspec.Struct, frozen=True, kw_only=True):
    """What one policy produced: the transcript, the final state and the VMCS work it cost.

    ``failure`` is the partition's ``PartitionFailed`` reason when a VM entry failed (then the
    final state is not inspectable: None).
    """

    transcript: list[object]
    failure: str | None
    final_tdx: tuple[TdxL2State, TdxL2State] | None
    final_registers: tuple[dict[Reg, int], dict[Reg, int]] | None
    vmcs_reads: int
    vmcs_writes: int
    commits: int
    window_commits: int
    fewer_writes_due: bool


def _guest_fields(state: TdxL2State) -> TdxL2State:
    """``state`` with the policy-dependent counters zeroed."""
    return msgspec.structs.replace(state, vmcs_reads=0, vmcs_writes=0, commits=0)


async def _probe(vp: Vp) -> Outcome:
    """What the guest sees after a step: VTL1 reads VTL0's registers, or VTL0 reads its EFER."""
    if vp.active_vtl == Vtl.VTL1:
        return await vp.execute(GetVpRegisters(names=[int(n) for n in _PROBED], target_vtl=Vtl.VTL0))
    return await vp.execute(Rdmsr(msr=Msr.EFER))


class _Coalescing:
    """Decides, from the probes alone, whether batching must have saved a VMCS write.

    An interval runs from one VTL0 commit point of the batched policy to the next while VTL1
    runs; with no count- or time-closed batch inside it, batched changes each VMCS field at most
    once per interval (zero times if it ends where it began), while write-through changes it
    at least once per transition the probes saw.
    """

    __slots__ = ("due", "seen")

    def __init__(self) -> None:
        self.seen: dict[int, list[int]] | None = None
        self.due = False

    def open(self, values: Sequence[int]) -> None:
        self.seen = {i: [values[i]] for i in _VMCS_PROBED}

    def observe(self, values: Sequence[int]) -> None:
        if self.seen is not None:
            for i, seq in self.seen.items():
                if seq[-1] != values[i]:
                    seq.append(values[i])

    def close(self) -> None:
        if self.seen is not None:
            self.due |= any(len(seq) - 1 > (seq[-1] != seq[0]) for seq in self.seen.values())
        self.seen = None


async def _play(policy: CommitPolicy, scenario: Scenario, check_invariants: bool = True) -> Run:
    transcript: list[object] = []
    coalescing = _Coalescing()
    with anyio.fail_after(_SAFETY_NET):
        async with open_runtime(seed=1, check_invariants=check_invariants) as rt:
            part = await rt.create_partition(
                commit_policy=policy,
                batch_max_updates=scenario.batch_max_updates,
                batch_window=scenario.batch_window,
            )
            vp = part.vp(0)
            transcript.extend([await vp.execute(action) for action in _BRING_UP])
            try:
                for op in [VtlCall(), *scenario.ops]:
                    outcome: object = None
                    if isinstance(op, Inspect):
                        transcript.append(_guest_fields(await vp.tdx_state(op.vtl)))
                    elif isinstance(op, Idle):
                        await anyio.sleep(op.windows * scenario.batch_window)
                    else:
                        outcome = await vp.execute(op)
                        transcript.append(outcome)
                    probe = await _probe(vp)
                    transcript.append(probe)
                    if vp.active_vtl == Vtl.VTL0 or op == Inspect(Vtl.VTL0) or isinstance(op, Idle):
                        coalescing.close()  # a VTL0 commit point (the RDMSR probe is a VTL0 entry)
                    if isinstance(probe, HypercallResult) and probe.status == HvStatus.SUCCESS:
                        if outcome == _CALLED or op == Inspect(Vtl.VTL0):
                            coalescing.open(probe.values)
                        else:
                            coalescing.observe(probe.values)
            except PartitionFailed as exc:
                # DOMAIN 7.2: a VM entry failed and the partition ended; the history stops here.
                transcript.append(("PartitionFailed", str(exc)))
                coalescing.seen = None
            coalescing.close()
            stats = vp.statistics()
            tdx = registers = None
            if part.failure is None:
                full = (await vp.tdx_state(Vtl.VTL0), await vp.tdx_state(Vtl.VTL1))
                tdx = (_guest_fields(full[0]), _guest_fields(full[1]))
                registers = (
                    await vp.registers(Vtl.VTL0, _ALL_REGISTERS),
                    await vp.registers(Vtl.VTL1, _ALL_REGISTERS),
                )
                stats = vp.statistics()
                assert stats.staged_updates == 0
            return Run(
                transcript=transcript,
                failure=part.failure,
                final_tdx=tdx,
                final_registers=registers,
                vmcs_reads=stats.vmcs_reads,
                vmcs_writes=stats.vmcs_writes,
                commits=stats.commits,
                window_commits=rt.statistics().scheduler.window_commits,
                fewer_writes_due=coalescing.due
                and scenario.batch_max_updates == _UNBOUNDED
                and scenario.batch_window == _NEVER,
            )


def _run(backend: str, policy: CommitPolicy, scenario: Scenario, check_invariants: bool = True) -> Run:
    """Play ``scenario`` in its own event loop (the A7 pattern: one run per drawn scenario)."""
    play: Callable[[], Awaitable[Run]] = functools.partial(_play, policy, scenario, check_invariants)
    if backend == "trio":
        # Virtual time: an Idle op jumps the clock, so batch windows close deterministically.
        clock = trio.testing.MockClock(autojump_threshold=0)
        return anyio.run(play, backend="trio", backend_options={"clock": clock})
    return anyio.run(play, backend=backend)


def _write_through(scenario: Scenario) -> Scenario:
    """``scenario`` under the batched policy's write-through variant: a commit per update."""
    return msgspec.structs.replace(scenario, batch_max_updates=1)


def _assert_same_guest_history(eager: Run, batched: Run, through: Run) -> None:
    """One guest-visible history (VM-entry failures included); DOMAIN 7.1's count relations."""
    for other in (batched, through):
        assert other.transcript == eager.transcript
        assert other.failure == eager.failure
        assert other.final_tdx == eager.final_tdx
        assert other.final_registers == eager.final_registers
    assert batched.vmcs_reads == through.vmcs_reads == 0  # the write-back reads nothing
    assert batched.vmcs_writes <= through.vmcs_writes <= eager.vmcs_writes
    assert batched.commits <= eager.commits


def _three(backend: str, scenario: Scenario) -> tuple[Run, Run, Run]:
    """Eager, batched and write-through runs of ``scenario`` on ``backend``."""
    return (
        _run(backend, "eager", scenario),
        _run(backend, "batched", scenario),
        _run(backend, "batched", _write_through(scenario)),
    )


# ---- tests ----------------------------------------------------------------------------------------

_BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])


@_BACKENDS
@settings(max_examples=100, deadline=None)
@given(scenario=SCENARIOS)
def test_policies_agree_on_drawn_scenarios(backend: str, scenario: Scenario) -> None:
    """Eager, batched and write-through give one transcript (VM-entry failures included) and
    final state; batched writes no more than write-through, which writes no more than eager."""
    eager, batched, through = _three(backend, scenario)
    _assert_same_guest_history(eager, batched, through)
    if batched.fewer_writes_due:
        event("a VMCS field changes twice inside one batch")
        assert batched.vmcs_writes < through.vmcs_writes
    event("VM entry failed" if eager.failure else "no VM-entry failure")
    event("batched wrote fewer" if batched.vmcs_writes < through.vmcs_writes else "batched wrote as many")
    # The other backend runs the same model: everything, counters included, is identical.
    assert _run(_OTHER_BACKEND[backend], "batched", scenario) == batched


@_BACKENDS
@settings(max_examples=30, deadline=None)
@given(scenario=WINDOWED_SCENARIOS)
def test_batch_window_commits_keep_the_transcript(backend: str, scenario: Scenario) -> None:
    """Batch windows closing mid-scenario (flusher commits) change no guest-visible outcome."""
    _assert_same_guest_history(*_three(backend, scenario))
    batched = _run(backend, "batched", scenario)
    if backend == "trio":  # deterministic virtual time: the window closed whenever an Idle follows staging
        event("flusher committed" if batched.window_commits else "flusher idle")


#: VTL1 switches VTL0 to long mode and moves its RIP in one batch, then returns (DOMAIN S4, S5).
#: CR4.PAE comes first: without it the derived LMA would fail VM entry check 1 (DOMAIN 7.2).
_MODE_SWITCH: Final = Scenario(
    ops=[
        SetVpRegisters(
            target_vtl=Vtl.VTL0,
            registers=[
                RegisterAssoc(name=Reg.CR4, value=CR4_PAE),
                RegisterAssoc(name=Reg.EFER, value=EFER_LME | EFER_NXE),
                RegisterAssoc(name=Reg.CR0, value=CR0_PE | CR0_PG | CR0_ET),
                RegisterAssoc(name=Reg.RIP, value=0x20_0000),
            ],
        ),
        VtlReturn(),
        Inspect(Vtl.VTL0),
    ]
)
#: The same batch without CR4.PAE: OpenHCL derives LMA anyway (no PAE guard), and VTL0's next VM
#: entry fails check 1 (DOMAIN 7.2): the partition ends, under both policies, at the same step.
_NO_PAE: Final = Scenario(
    ops=[
        msgspec.structs.replace(
            _MODE_SWITCH.ops[0],  # type: ignore[arg-type]  # a SetVpRegisters
            registers=_MODE_SWITCH.ops[0].registers[1:],  # type: ignore[union-attr]
        ),
        VtlReturn(),
        Inspect(Vtl.VTL0),
    ]
)


@_BACKENDS
def test_mode_switch_batch_costs_fewer_vmcs_writes_when_batched(backend: str) -> None:
    """SetVpRegisters([Cr4=PAE, Efer=LME|NXE, Cr0=PE|PG|ET, Rip]) + VtlReturn: batched writes
    less than write-through (GUEST_EFER changes twice in it: LME, then LMA), which writes less
    than OpenHCL's eager pattern; the write-back reads nothing (DOMAIN 7.1)."""
    eager, batched, through = _three(backend, _MODE_SWITCH)
    _assert_same_guest_history(eager, batched, through)
    assert batched.vmcs_writes < through.vmcs_writes < eager.vmcs_writes
    assert eager.vmcs_reads > 0 == batched.vmcs_reads
    assert batched.final_tdx is not None
    vtl0 = batched.final_tdx[Vtl.VTL0]
    assert vtl0.efer == EFER_LME | EFER_LMA | EFER_NXE
    assert vtl0.long_mode_guest
    probe_after_set, probe_after_return = batched.transcript[5], batched.transcript[7]
    assert isinstance(probe_after_set, HypercallResult)
    assert probe_after_set.values[_PROBED.index(Reg.RIP)] == 0x20_0000
    assert probe_after_return == Completed(value=EFER_LME | EFER_LMA | EFER_NXE)  # VTL0's own RDMSR


@_BACKENDS
def test_lma_without_pae_fails_vm_entry_under_both_policies(backend: str) -> None:
    """DOMAIN 7.2: SetVpRegisters(Efer=LME|NXE, Cr0=PE|PG|ET) with CR4.PAE = 0 succeeds (no PAE
    guard); VTL0's first VM entry after the return fails check 1 and ends the partition."""
    eager, batched, through = _three(backend, _NO_PAE)
    _assert_same_guest_history(eager, batched, through)
    assert batched.transcript[4] == HypercallResult(status=HvStatus.SUCCESS, reps_completed=3)
    assert batched.transcript[6] == VtlSwitched(to_vtl=Vtl.VTL0, entry_reason=0)
    kind, reason = batched.transcript[-1]  # type: ignore[misc]  # the recorded failure
    assert kind == "PartitionFailed"
    assert reason == batched.failure
    assert reason.startswith("partition 0 vp 0 VTL0: VM entry failed")
    assert "check 1 (IA-32e mode guest vs CR0.PG, CR4.PAE, CR4.PCIDE)" in reason
    assert len(batched.transcript) == 8  # the failure is VTL0's first action after the return


def _skip_lma_recompute(efer: int, cr0: int) -> int:
    return efer


def test_skipped_lma_recompute_trips_an_invariant(monkeypatch: pytest.MonkeyPatch) -> None:
    """Teeth: with the LMA recompute skipped in one policy's run, the invariant check fails it.

    Eager commits inside VTL1's SetVpRegisters, where the invariant check runs before any VM
    entry of VTL0 could notice (under batched, VM entry check 2 would end the partition first).
    The violating step is a crash: its caller gets ActorCrashed, caused by the InternalError.
    """
    _run("trio", "eager", _MODE_SWITCH)
    with monkeypatch.context() as patch:
        patch.setattr(actors._state, "derive_lma", _skip_lma_recompute)
        with pytest.raises(ExceptionGroup) as failure:  # raised inside open_runtime's task group
            _run("trio", "eager", _MODE_SWITCH)
    assert failure.group_contains(ActorCrashed, match=r"EFER\.LMA=0 but LME=1 PG=1")
    crashed = failure.value.subgroup(ActorCrashed)
    assert crashed is not None
    assert isinstance(crashed.exceptions[0].__cause__, InternalError)


def test_skipped_lma_recompute_changes_the_transcript(monkeypatch: pytest.MonkeyPatch) -> None:
    """Teeth: without invariant checks, a policy that skips the LMA recompute shows in the
    transcript: VTL0's VM entry fails check 2 (CR0.PG = 1 needs EFER.LME = EFER.LMA)."""
    eager = _run("asyncio", "eager", _MODE_SWITCH, check_invariants=False)
    through = _run("asyncio", "batched", _write_through(_MODE_SWITCH), check_invariants=False)
    with monkeypatch.context() as patch:
        patch.setattr(actors._state, "derive_lma", _skip_lma_recompute)
        broken = _run("asyncio", "batched", _MODE_SWITCH, check_invariants=False)
    assert broken.transcript != eager.transcript
    assert broken.failure is not None
    assert "check 2 (EFER.LMA and EFER.LME)" in broken.failure
    with pytest.raises(AssertionError):
        _assert_same_guest_history(eager, broken, through)


def test_batching_that_commits_every_update_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Teeth: a batched policy that commits like write-through fails the strictly-fewer check."""
    restore = Scenario(
        ops=[
            SetVpRegisters(target_vtl=Vtl.VTL0, registers=[RegisterAssoc(name=Reg.EFER, value=EFER_NXE | 1)]),
            SetVpRegisters(target_vtl=Vtl.VTL0, registers=[RegisterAssoc(name=Reg.EFER, value=EFER_NXE)]),
        ]
    )
    eager, batched, through = _three("asyncio", restore)
    assert batched.fewer_writes_due  # EFER changes and changes back inside one batch
    assert batched.vmcs_writes < through.vmcs_writes
    stage, set_registers = actors._state.VpState.stage, actors._state.VpState.set_registers

    def stage_and_commit(vp: actors._state.VpState, vtl: int, name: int, value: int) -> None:
        stage(vp, vtl, name, value)
        vp.commit(vtl)

    def set_and_commit(vp: actors._state.VpState, vtl: int, values: Iterable[tuple[int, int]]) -> None:
        set_registers(vp, vtl, values)
        vp.commit(vtl)

    with monkeypatch.context() as patch:
        patch.setattr(actors._state.VpState, "stage", stage_and_commit)
        patch.setattr(actors._state.VpState, "set_registers", set_and_commit)
        unbatched = _run("asyncio", "batched", restore)
    _assert_same_guest_history(eager, unbatched, through)  # guest-visible behaviour is the same ...
    assert unbatched.fewer_writes_due
    assert unbatched.vmcs_writes == through.vmcs_writes  # ... so only the strict check catches it
