"""The embedding contract (RELIABILITY G1-G3): bad calls, wrong threads, checkpoints, cancellation."""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any, Final, get_args

import anyio
import anyio.lowlevel
import msgspec
import pytest
import trio
from hypothesis import HealthCheck, given, settings, strategies as st

from protocol import (
    Action,
    EnablePartitionVtl,
    EnableVpVtl,
    GetVpRegisters,
    HvRegisterName as Reg,
    HvStatus,
    HypercallResult,
    InitialVpContext,
    LoadTableRegister,
    Rdmsr,
    RegisterAssoc,
    SetVpRegisters,
    Vtl,
)
from protocol._x86 import Msr
from runtime import Busy, open_runtime
from tests import strategies
from tests.guest import checked_runtime, long_mode_context, new_partition

#: Values of the wrong type or range for an int field, and what each must raise.
_BAD_INTS: Final = [(1.5, TypeError), ("1", TypeError), (None, TypeError), (True, TypeError)]
_BAD_INTS_RANGE: Final = [(-1, ValueError), (1 << 129, ValueError)]


def _with(action: Any, field: str, value: object) -> Any:
    """``action`` with ``field`` forced to ``value`` (Struct.__init__ does not check types)."""
    msgspec.structs.force_setattr(action, field, value)
    return action


async def _enabled(rt: Any) -> Any:
    part = await new_partition(rt)
    vp = part.vp(0)
    out = await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1))
    assert out == HypercallResult(status=HvStatus.SUCCESS)
    return part


async def test_float_gdtr_is_refused_where_it_enters() -> None:
    """Reproducer: LoadTableRegister(value=1.5) is a TypeError naming field, partition, VP, VTL."""
    for clock in ("real", "virtual"):
        async with open_runtime(clock=clock, check_invariants=True) as rt:  # type: ignore[arg-type]
            part = await new_partition(rt)
            other = await new_partition(rt)
            vp = part.vp(0)
            bad = _with(LoadTableRegister(which="gdtr", value=0), "value", 1.5)
            with pytest.raises(TypeError) as caught:
                await vp.execute(bad)
            message = str(caught.value)
            assert "LoadTableRegister.value=1.5" in message
            assert f"partition {part.partition_id} vp 0 (VTL0)" in message
            assert vp.statistics().actions == 0  # nothing queued, nothing applied
            assert len(vp._cell.mailbox) == 0
            # Neither this VP nor any other partition is hurt: the next calls work.
            assert isinstance(await vp.execute(Rdmsr(msr=Msr.EFER)), object)
            assert (await vp.registers(Vtl.VTL0, [Reg.GDTR]))[Reg.GDTR] == 0xFFFF << 48
            await other.vp(0).execute(Rdmsr(msr=Msr.EFER))


async def test_float_efer_in_an_initial_context_is_refused() -> None:
    """Reproducer: EnableVpVtl(context.efer=1.5) names the nested field; nothing reaches apply_controls."""
    async with checked_runtime() as rt:
        part = await _enabled(rt)
        context = _with(long_mode_context(), "efer", 1.5)
        expected = r"EnableVpVtl\.context\.efer=1\.5: expected an unsigned 64-bit int"
        with pytest.raises(TypeError, match=expected):
            await part.vp(0).execute(EnableVpVtl(vp_index=0, target_vtl=Vtl.VTL1, context=context))
        assert part.statistics().supervisor.requests == 1  # only the EnablePartitionVtl
        good = EnableVpVtl(vp_index=0, target_vtl=Vtl.VTL1, context=long_mode_context())
        assert await part.vp(0).execute(good) == HypercallResult(status=HvStatus.SUCCESS)


async def test_negative_vp_index_does_not_wrap() -> None:
    """Reproducer: EnableVpVtl(vp_index=-1) is a ValueError; VP 3 keeps VTL1 disabled."""
    async with checked_runtime() as rt:
        part = await _enabled(rt)
        action = EnableVpVtl(vp_index=-1, target_vtl=Vtl.VTL1, context=long_mode_context())
        with pytest.raises(ValueError, match=r"EnableVpVtl\.vp_index=-1: negative"):
            await part.vp(0).execute(action)
        assert part._cells.supervisor.state.vtl1_enable_called == [False] * 4


def _bad_values(info: Any) -> list[tuple[object, type[Exception]]]:
    """Wrong values for a field of msgspec type ``info``, each with the error it must raise."""
    import msgspec.inspect as mi

    if isinstance(info, mi.Metadata):
        info = info.type
    if isinstance(info, mi.UnionType):  # Optional[...]: None is fine, the rest is not
        (info,) = (t for t in info.types if not isinstance(t, mi.NoneType))
        return [(bad, error) for bad, error in _bad_values(info) if bad is not None]
    if isinstance(info, mi.IntType):
        return [*_BAD_INTS, *_BAD_INTS_RANGE]
    if isinstance(info, mi.BoolType):
        return [(1, TypeError), (None, TypeError), ("yes", TypeError)]
    if isinstance(info, mi.LiteralType | mi.EnumType):
        return [(None, TypeError), (1.5, TypeError), (True, TypeError)]
    if isinstance(info, mi.ListType | mi.StructType):
        return [(None, TypeError), (7, TypeError), ("x", TypeError)]
    raise AssertionError(info)


_SLOW_OK: Final = [HealthCheck.large_base_example, HealthCheck.too_slow]


@pytest.mark.parametrize("cls", get_args(Action), ids=lambda cls: cls.__name__)
@settings(max_examples=3, deadline=None, suppress_health_check=_SLOW_OK)
@given(data=st.data())
def test_every_field_of_every_action_is_checked(cls: type[Any], data: st.DataObject) -> None:
    """Each field of each action refuses each wrong type and range, naming the field."""
    import msgspec.inspect as mi

    from protocol import check_action

    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    for field in info.fields:
        for bad, error in _bad_values(field.type):
            action = _with(data.draw(strategies.ACTION_STRATEGIES[cls]), field.name, bad)
            with pytest.raises(error, match=rf"{cls.__name__}\.{field.name}="):
                check_action(action)


def test_nested_structs_and_lists_are_checked() -> None:
    """RegisterAssoc elements and InitialVpContext fields are checked, with their path."""
    from protocol import check_action

    element = _with(RegisterAssoc(name=Reg.RIP, value=0), "value", 1 << 128)
    with pytest.raises(ValueError, match=r"SetVpRegisters\.registers\[1\]\.value=.*too wide"):
        check_action(SetVpRegisters(registers=[RegisterAssoc(name=Reg.RSP), element]))
    with pytest.raises(TypeError, match=r"SetVpRegisters\.registers\[0\]=.*expected a RegisterAssoc"):
        check_action(SetVpRegisters(registers=[(Reg.RIP, 1)]))  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"GetVpRegisters\.names\[2\]='RIP'"):
        check_action(GetVpRegisters(names=[Reg.RIP, Reg.RSP, "RIP"]))  # type: ignore[list-item]
    from protocol import StartVirtualProcessor

    context = _with(InitialVpContext(), "cs", -5)
    with pytest.raises(ValueError, match=r"StartVirtualProcessor\.context\.cs=-5"):
        check_action(StartVirtualProcessor(vp_index=1, target_vtl=0, context=context))


async def test_a_million_element_set_vp_registers_is_refused_at_once() -> None:
    """Reproducer: 1,000,000 elements exceed the 12-bit rep count: ValueError before anything runs."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt)).vp(0)
        huge = SetVpRegisters(registers=[RegisterAssoc(name=Reg.RSP, value=1)] * 1_000_000)
        with pytest.raises(ValueError, match="1000000 elements, at most 4095"):
            await vp.execute(huge)
        assert vp.statistics().actions == 0


async def test_an_immutable_action_sent_again_is_checked_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same frozen action object is checked on its first call only; lists are checked each time."""
    import runtime._handles

    checked: list[str] = []
    real = dict(runtime._handles._VALIDATORS)

    def spy(cls: type[Any]) -> Any:
        def check(action: Any) -> None:
            checked.append(cls.__name__)
            real[cls](action)

        return check

    monkeypatch.setattr(runtime._handles, "_VALIDATORS", {cls: spy(cls) for cls in real})
    async with checked_runtime() as rt:
        vp = (await new_partition(rt)).vp(0)
        read = Rdmsr(msr=Msr.EFER)
        for _ in range(3):
            await vp.execute(read)
        await vp.execute(Rdmsr(msr=Msr.EFER))  # an equal action, another object: checked
        assert checked == ["Rdmsr", "Rdmsr"]
        checked.clear()
        names = [Reg.RIP]
        get = GetVpRegisters(names=names)
        await vp.execute(get)
        names.append("RSP")  # type: ignore[arg-type]  # a list inside a frozen action can change
        with pytest.raises(TypeError, match=r"GetVpRegisters\.names\[1\]='RSP'"):
            await vp.execute(get)
        assert checked == ["GetVpRegisters", "GetVpRegisters"]
        for bad in (None, object()):  # nothing that is not an action passes as "checked"
            with pytest.raises(TypeError, match="not a guest action"):
                await vp.execute(bad)  # type: ignore[arg-type]


# ---- G1: an API fuzzer against a live runtime ---------------------------------------------------

_ANY: Final = st.one_of(
    st.integers(min_value=-(1 << 130), max_value=1 << 130),
    st.floats(allow_nan=True),
    st.text(max_size=3),
    st.none(),
    st.booleans(),
    st.lists(st.integers(-5, 5), max_size=3),
)
_NEIGHBOUR: Final = [Rdmsr(msr=Msr.EFER), Rdmsr(msr=Msr.LSTAR), GetVpRegisters(names=[Reg.RIP, Reg.CR0])]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_api_fuzzer_never_reaches_a_runner(anyio_backend: str, data: st.DataObject) -> None:
    """G1: arbitrary field values: typed errors or outcomes only; a busy neighbour's transcript holds."""
    from protocol import SimulationError

    async with checked_runtime() as rt:
        quiet = await new_partition(rt)
        baseline = [await quiet.vp(0).execute(action) for action in _NEIGHBOUR * 4]
        fuzzed = await new_partition(rt)
        neighbour = await new_partition(rt)
        transcript: list[object] = []

        async def busy_neighbour() -> None:
            for action in _NEIGHBOUR * 4:
                outcome = await neighbour.vp(0).execute(action)
                transcript.append(outcome)

        async with anyio.create_task_group() as tg:
            tg.start_soon(busy_neighbour)
            for _ in range(6):
                cls = data.draw(st.sampled_from(get_args(Action)))
                action = data.draw(strategies.ACTION_STRATEGIES[cls])
                for field in data.draw(st.lists(st.sampled_from(cls.__struct_fields__), max_size=2)):
                    action = _with(action, field, data.draw(_ANY))
                vp = fuzzed.vp(data.draw(st.integers(0, 3)))
                refused: Exception | None = None
                try:
                    await vp.execute(action)
                except (TypeError, ValueError) as exc:
                    refused = exc
                except SimulationError:  # a refusal of the guest action (VpNotRunning ...)
                    pass
                assert refused is None or "vp.execute failed" in str(refused)
                assert rt.statistics().scheduler.crashes == 0
        assert transcript == baseline


# ---- G2: wrong thread, closed runtime -----------------------------------------------------------


def _call_from_thread(coroutine_fn: Any, library: str) -> BaseException | None:
    """Run ``coroutine_fn()`` on a new event loop in another thread; return what it raised."""
    caught: list[BaseException | None] = [None]

    def target() -> None:
        try:
            if library == "asyncio":
                asyncio.run(coroutine_fn())
            else:
                trio.run(coroutine_fn)
        except BaseException as exc:  # handed back to the test
            caught[0] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(5)
    return caught[0]


@pytest.mark.parametrize("library", ["asyncio", "trio"])
async def test_calls_from_another_thread_fail_at_once_and_queue_nothing(library: str) -> None:
    """G2 reproducer: a call from another thread/loop raises RuntimeError, nothing stays queued."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp = part.vp(0)
        calls = [
            lambda: vp.execute(Rdmsr(msr=Msr.EFER)),
            lambda: vp.registers(Vtl.VTL0, [Reg.RIP]),
            lambda: vp.tdx_state(Vtl.VTL0),
            lambda: rt.create_partition(vp_count=1),
            lambda: part.snapshot(),
            lambda: part.stop(),
        ]
        for call in calls:
            error = await anyio.to_thread.run_sync(_call_from_thread, call, library)
            assert isinstance(error, RuntimeError), error
            assert "another thread" in str(error)
        assert len(vp._cell.mailbox) == 0
        assert len(rt.partitions) == 1
        with anyio.fail_after(1):  # the runtime answers the next call at once
            assert await vp.execute(Rdmsr(msr=Msr.EFER)) is not None


async def test_calls_after_the_runtime_closed_raise_closed_after_a_checkpoint() -> None:
    """G2: once open_runtime has exited, execute and create_partition raise ClosedResourceError."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt)).vp(0)
    with pytest.raises(anyio.ClosedResourceError, match="stopped"):
        await vp.execute(Rdmsr(msr=Msr.EFER))
    with pytest.raises(anyio.ClosedResourceError, match="closed"):
        await rt.create_partition(vp_count=1)


# ---- G3: every call is a checkpoint -------------------------------------------------------------


async def test_busy_retry_loops_do_not_freeze_the_loop() -> None:
    """G3 reproducer: 64 callers retrying on Busy in tight loops all finish; the loop keeps turning."""
    async with open_runtime(mailbox_capacity=1) as rt:
        vp = (await rt.create_partition(vp_count=1)).vp(0)
        busy = 0
        ticks = 0

        async def caller() -> None:
            nonlocal busy
            for _ in range(5):
                while True:
                    try:
                        await vp.execute(Rdmsr(msr=Msr.EFER))
                        break
                    except Busy:
                        busy += 1

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await anyio.lowlevel.checkpoint()

        with anyio.fail_after(10):  # a safety net: a frozen loop would never let it fire
            async with anyio.create_task_group() as tg:
                tg.start_soon(ticker)
                async with anyio.create_task_group() as callers:
                    for _ in range(64):
                        callers.start_soon(caller)
                tg.cancel_scope.cancel()
        assert vp.statistics().actions == 64 * 5
        assert busy > 0
        assert ticks > 0  # another task ran while the retries went on


async def test_a_retry_loop_on_a_closed_partition_can_be_cancelled() -> None:
    """G3: retrying forever on a closed-resource error still yields: move_on_after fires."""
    async with open_runtime() as rt:
        part = await rt.create_partition(vp_count=1)
        await part.stop()
        attempts = 0
        with anyio.move_on_after(0.05) as scope:
            while True:
                try:
                    await part.vp(0).execute(Rdmsr(msr=Msr.EFER))
                except anyio.ClosedResourceError:
                    attempts += 1
        assert scope.cancelled_caught
        assert attempts > 0
        with anyio.CancelScope() as cancelled:  # a refused action is a checkpoint too
            cancelled.cancel()
            await part.vp(0).execute(_with(Rdmsr(msr=0), "msr", math.pi))
        assert cancelled.cancelled_caught


# ---- cancellation (RELIABILITY E2) ---------------------------------------------------------------


class _SlowVp:
    def before_vp_step(self, cell: object) -> float:
        return 3600.0

    def after_step(self, partition: object) -> None:
        pass

    def crashed(self, where: str, error: BaseException) -> None:
        pass


async def test_a_cancelled_call_that_has_not_started_is_withdrawn() -> None:
    """E2: cancelled while queued, the action never runs: no effect, the mailbox is empty."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt)).vp(0)
        scheduler, cell = rt._scheduler, vp._cell
        scheduler.hooks = _SlowVp()  # the VP is slow: its next step waits
        write = SetVpRegisters(registers=[RegisterAssoc(name=Reg.RBX, value=0x5A5A)])
        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()

            async def caller() -> None:
                with scope:
                    await vp.execute(write)

            tg.start_soon(caller)
            await anyio.wait_all_tasks_blocked()
            assert len(cell.mailbox) == 1  # queued, not started
            scope.cancel()
        assert scope.cancelled_caught
        assert len(cell.mailbox) == 0  # withdrawn
        scheduler.hooks = None
        cell.scheduled = False  # end the pause now rather than in an hour
        assert (await vp.registers(Vtl.VTL0, [Reg.RBX]))[Reg.RBX] == 0
        assert vp.statistics().actions == 0


async def test_a_cancelled_call_that_has_started_completes_and_drops_its_outcome() -> None:
    """E2: cancelled while its hypercall waits for the supervisor, it completes; the outcome is dropped."""
    from actors import GuestVsmState

    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp = part.vp(0)
        rip = (await vp.registers(Vtl.VTL0, [Reg.RIP]))[Reg.RIP]
        cells = part._cells
        cells.restarting = True  # hold the supervisor: the hypercall will wait for it
        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()

            async def caller() -> None:
                with scope:
                    await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1))

            tg.start_soon(caller)
            await anyio.wait_all_tasks_blocked()
            assert vp._cell.pending is not None  # started: waiting for the supervisor
            scope.cancel()
        assert scope.cancelled_caught
        cells.restarting = False
        rt._scheduler._schedule_partition(cells)
        # The hypercall completes: the partition is enabled and VP 0's RIP moved past it.
        assert (await vp.registers(Vtl.VTL0, [Reg.RIP]))[Reg.RIP] == rip + 3
        assert part.statistics().supervisor.guest_vsm == GuestVsmState.ENABLED


async def test_a_retry_loop_on_busy_never_freezes_the_loop_fail_after_fires() -> None:
    """Reproducer: retrying on Busy forever (the VP is slow, its mailbox full): fail_after(1) fires."""
    async with open_runtime(mailbox_capacity=1) as rt:
        vp = (await rt.create_partition(vp_count=1)).vp(0)
        rt._scheduler.hooks = _SlowVp()  # its next step waits an hour: the mailbox stays full
        async with anyio.create_task_group() as tg:
            tg.start_soon(vp.execute, Rdmsr(msr=Msr.EFER))  # takes the one mailbox place
            await anyio.wait_all_tasks_blocked()
            refusals = 0

            async def retry_forever() -> None:
                nonlocal refusals
                with anyio.fail_after(1):
                    while True:
                        try:
                            await vp.execute(Rdmsr(msr=Msr.EFER))
                        except Busy:
                            refusals += 1

            with pytest.raises(TimeoutError):
                await retry_forever()
            assert refusals > 0
            tg.cancel_scope.cancel()
