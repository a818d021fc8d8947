"""Partition snapshots (API.md): all state, exactly restored, versioned; damaged data creates nothing."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

import actors
from actors import SNAPSHOT_PLAN, VpSnapshot
from actors._snapshot import PartitionStateSnapshot
from protocol import (
    HvRegisterName as Reg,
    HvStatus,
    HypercallResult,
    Intercepted,
    ModifyVtlProtectionMask,
    MovToCr,
    ProtocolError,
    Rdmsr,
    RegisterAssoc,
    SetVpRegisters,
    StartVirtualProcessor,
    Vtl,
    VtlReturn,
)
from protocol._x86 import CR0_ET, CR0_PE, Msr
from runtime._snapshot import PartitionSnapshot
from tests.guest import checked_runtime, long_mode_context, new_partition
from tests.scenarios._secure import arm, enable_synic, reg, s1_setup, set_regs

if TYPE_CHECKING:
    from runtime import Partition, Runtime

#: A VTL0 event (#GP, error code 0) VTL1 leaves pending: PendingEvent0.
_PENDING_GP = 1 | 13 << 16 | 1 << 8


async def _rich_partition(rt: Runtime) -> Partition:
    """A partition with state in every corner: VTL1, SynIC, intercepts, protections, events."""
    part = await new_partition(rt)
    vp = await s1_setup(part)
    await enable_synic(vp)
    await arm(vp, 0x1, cr0_mask=CR0_PE)  # Cr0Write, CR0.PE protected
    protect = ModifyVtlProtectionMask(gpns=[0x10, 0x11, 0x2000], map_flags=0x1)
    assert await vp.execute(protect) == HypercallResult(status=HvStatus.SUCCESS, reps_completed=3)
    start = StartVirtualProcessor(vp_index=1, target_vtl=Vtl.VTL0, context=long_mode_context(0x9000))
    assert await vp.execute(start) == HypercallResult(status=HvStatus.SUCCESS)
    rsp = await set_regs(vp, (Reg.RSP, 0x7777), target_vtl=Vtl.VTL0)  # staged for VTL0
    assert rsp == HypercallResult(status=HvStatus.SUCCESS, reps_completed=1)
    await vp.execute(VtlReturn(fast=True))
    intercepted = await vp.execute(MovToCr(cr=0, value=CR0_PE | CR0_ET))
    assert isinstance(intercepted, Intercepted)  # VTL1 now holds a message in SINT0
    event = await set_regs(vp, (Reg.PENDING_EVENT0, _PENDING_GP), target_vtl=Vtl.VTL0)
    assert event == HypercallResult(status=HvStatus.SUCCESS, reps_completed=1)
    await part.vp(1).execute(Rdmsr(msr=Msr.EFER))
    return part


def _payload(data: bytes) -> PartitionSnapshot:
    return msgspec.json.decode(data.partition(b"\n")[2], type=PartitionSnapshot)


def _state_of(part: Partition) -> list[Any]:
    """Every slot of every VP, the supervisor's state and the VMCS images, as comparable data."""
    cells = part._cells
    vps = [msgspec.to_builtins(actors.snapshot_vp(cell.actor)) for cell in cells.cells]
    vmcs = [[dict(vtl.vmcs.full()) for vtl in cell.actor.state.vtls] for cell in cells.cells]
    supervisor = msgspec.to_builtins(actors.snapshot_partition_state(cells.supervisor))
    return [vps, vmcs, supervisor]


async def test_restore_gives_a_new_partition_in_exactly_that_state() -> None:
    """snapshot() commits and encodes everything; restore_partition rebuilds it under a new id."""
    async with checked_runtime() as rt:
        part = await _rich_partition(rt)
        data = await part.snapshot()
        assert data.startswith(b"tdvsm-partition-snapshot 1 ")
        taken = _payload(data)
        assert set(taken.supervisor.protections) == {0x10, 0x11, 0x2000}
        message = taken.vps[0].state.vtls[1].sint0_message
        assert message is not None
        assert message.register_name == Reg.CR0
        assert taken.vps[0].state.vtl1 is not None
        assert taken.vps[0].state.vtl1.pending_event == _PENDING_GP
        assert part.statistics().vps[0].staged_updates == 0  # it committed first
        copy = await rt.restore_partition(data)
        assert copy.partition_id != part.partition_id
        assert _state_of(copy) == _state_of(part)
        payload = _payload(await copy.snapshot())
        assert payload.vps == _payload(data).vps
        assert payload.supervisor == _payload(data).supervisor
        # Both carry on identically: the same actions give the same outcomes and state.
        for target in (part, copy):
            vp = target.vp(0)
            assert vp.active_vtl == Vtl.VTL1
            out = await vp.execute(SetVpRegisters(registers=[RegisterAssoc(name=0x0002_0000, value=3)]))
            assert out is not None
        # Either one's batch window may have closed by now, or not (wall time): compare them at a
        # commit point of both (a snapshot commits every VTL of every VP).
        assert _payload(await copy.snapshot()).vps == _payload(await part.snapshot()).vps
        assert _state_of(copy) == _state_of(part)


_STRUCTS: dict[type, type] = {
    actors.VpActor: VpSnapshot,
    actors._state.VpState: actors._snapshot.VpStateSnapshot,
    actors._state.VtlState: actors._snapshot.VtlSnapshot,
    actors._state.GuestVsmVpState: actors._snapshot.GuestVsmVpSnapshot,
    actors._registers.RegisterFile: actors._snapshot.RegisterFileSnapshot,
    actors._vsm.PartitionState: PartitionStateSnapshot,
    actors.PartitionSupervisor: PartitionStateSnapshot,
}


def _uncovered(cls: type, plan: dict[str, str], struct: type) -> list[str]:
    """Slots of ``cls`` the plan does not carry, and plan fields its snapshot Struct lacks."""
    slots = {slot for klass in cls.__mro__ for slot in getattr(klass, "__slots__", ())}
    problems = [f"{cls.__name__}.{slot}: not in PLAN" for slot in sorted(slots - set(plan))]
    problems += [f"{cls.__name__}.{slot}: no such slot" for slot in sorted(set(plan) - slots)]
    problems += [
        f"{cls.__name__}.{slot}: {struct.__name__} has no field {slot!r}"
        for slot, how in plan.items()
        if how == "field" and slot not in struct.__struct_fields__  # type: ignore[attr-defined]
    ]
    return problems


def test_snapshot_covers_every_slot_of_every_state_class() -> None:
    """PLAN names every __slots__ entry of each state class (issue 8's new fields included)."""
    assert set(_STRUCTS) == set(SNAPSHOT_PLAN)
    for cls, plan in SNAPSHOT_PLAN.items():
        assert set(plan.values()) <= {"field", "nested", "derived"}
        assert _uncovered(cls, plan, _STRUCTS[cls]) == []


def test_the_slot_coverage_check_has_teeth() -> None:
    """A state class that gains a slot (say a TDCALL counter) without a plan entry is reported."""

    class GrownVtlState(actors._state.VtlState):
        __slots__ = ("vmcs_reads_new",)

    plan = SNAPSHOT_PLAN[actors._state.VtlState]
    assert _uncovered(GrownVtlState, plan, actors._snapshot.VtlSnapshot) == [
        "GrownVtlState.vmcs_reads_new: not in PLAN"
    ]
    assert _uncovered(GrownVtlState, {**plan, "vmcs_reads_new": "field"}, actors._snapshot.VtlSnapshot) == [
        "GrownVtlState.vmcs_reads_new: VtlSnapshot has no field 'vmcs_reads_new'"
    ]


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:-1],  # truncated
        lambda data: data[:40] + bytes([data[40] ^ 1]) + data[41:],  # a flipped bit in the header
        lambda data: data[:-5] + b"9" + data[-4:],  # a changed payload byte: digest mismatch
        lambda data: data.replace(b" 1 ", b" 2 ", 1),  # another version
        lambda data: b"",
        lambda data: b"\x00" * 64,
        lambda data: b'{"version": 1}',
        lambda data: b"tdvsm-partition-snapshot 1 " + b"0" * 64 + b"\n{}",
    ],
    ids=[
        "truncated",
        "header-bit",
        "payload-byte",
        "version",
        "empty",
        "zeros",
        "foreign-json",
        "bad-digest",
    ],
)
async def test_damaged_or_foreign_data_raises_value_error_and_creates_nothing(damage: Any) -> None:
    """ValueError (a ProtocolError) for damaged, foreign or other-version data; no partition appears."""
    async with checked_runtime() as rt:
        data = await (await _rich_partition(rt)).snapshot()
        count = len(rt.partitions)
        with pytest.raises(ValueError, match="not a tdvsm partition snapshot") as caught:
            await rt.restore_partition(damage(data))
        assert isinstance(caught.value, ProtocolError)
        assert len(rt.partitions) == count


def _forge(data: bytes, change: Any) -> bytes:
    """Re-encode ``data`` with ``change`` applied to its payload and a correct digest."""
    payload = change(msgspec.to_builtins(_payload(data)))
    body = msgspec.json.encode(payload)
    return b"tdvsm-partition-snapshot 1 " + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def _break_lma(payload: dict[str, Any]) -> dict[str, Any]:
    efer = int(Reg.EFER)
    regs = payload["vps"][0]["state"]["vtls"][0]["regs"]["committed"]
    regs[efer] = regs.get(efer, actors._registers.PRIVATE_RESET[efer]) | 1 << 10  # LMA, but not LME&PG
    return payload


@pytest.mark.parametrize(
    "change",
    [
        lambda p: {**p, "vps": p["vps"][:-1]},
        lambda p: {**p, "bogus": 1},
        lambda p: {**p, "vps": [p["vps"][1], p["vps"][0], *p["vps"][2:]]},
        _break_lma,
    ],
    ids=["vp-count", "unknown-field", "vp-order", "invariant"],
)
async def test_forged_state_with_a_good_digest_is_refused(change: Any) -> None:
    """A payload that decodes but is not a possible partition state is refused too."""
    async with checked_runtime() as rt:
        data = await (await _rich_partition(rt)).snapshot()
        count = len(rt.partitions)
        with pytest.raises(ValueError, match="not a tdvsm partition snapshot"):
            await rt.restore_partition(_forge(data, change))
        assert len(rt.partitions) == count


async def test_a_snapshot_waits_for_a_hypercall_in_flight() -> None:
    """snapshot() runs when no VP is inside a hypercall: the state it encodes is whole."""
    import anyio

    async with checked_runtime() as rt:
        part = await new_partition(rt)
        cells = part._cells
        cells.restarting = True  # hold the supervisor: VP 0's hypercall waits for it
        results: list[bytes] = []
        async with anyio.create_task_group() as tg:
            from protocol import EnablePartitionVtl

            tg.start_soon(part.vp(0).execute, EnablePartitionVtl(target_vtl=Vtl.VTL1))
            await anyio.wait_all_tasks_blocked()

            async def take() -> None:
                results.append(await part.snapshot())

            tg.start_soon(take)
            await anyio.wait_all_tasks_blocked()
            assert not results  # still waiting for the hypercall
            cells.restarting = False
            rt._scheduler._schedule_partition(cells)
        (data,) = results
        assert _payload(data).supervisor.guest_vsm == actors.GuestVsmState.ENABLED
        rip = _payload(data).vps[0].state.vtls[0].regs.committed[int(Reg.RIP)]
        assert rip == 0xFFF0 + 3  # the hypercall's completion is in it, whole


async def test_restart_after_restore_uses_the_restored_checkpoint() -> None:
    """A VP of a restored partition crashing restarts from the restored state, not from reset."""
    from runtime import ActorCrashed, RestartPolicy
    from runtime.testing import crash_at

    async with checked_runtime(restart_policy=RestartPolicy(max_restarts=5)) as rt:
        copy = await rt.restore_partition(await (await _rich_partition(rt)).snapshot())
        vp = copy.vp(0)
        before = _state_of(copy)
        with crash_at("stage"), pytest.raises(ActorCrashed):
            await vp.execute(SetVpRegisters(registers=[reg(Reg.RSP, 1)]))
        after = _state_of(copy)
        assert after[2] == before[2]
        assert after[0][0]["state"] == before[0][0]["state"]
