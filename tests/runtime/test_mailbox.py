"""Mailboxes and reply slots: bounded queues, one-shot replies, cancelled waiters."""

from __future__ import annotations

import anyio
import pytest

from actors import Busy
from protocol import Rdmsr
from protocol._x86 import Msr
from runtime._mailbox import Mailbox, current_backend, reply, reply_error
from tests.guest import checked_runtime, new_partition


class _Owner:
    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return self.name

    def closed_error(self) -> Exception:
        return anyio.ClosedResourceError(f"{self.name} is stopped")


def test_mailbox_is_bounded_and_reports_first_message() -> None:
    """put raises Busy past capacity; on_first fires only on the empty -> non-empty edge."""
    firsts: list[object] = []
    owner = _Owner("owner")
    box: Mailbox[int] = Mailbox(2, firsts.append, owner)
    box.put(1)
    box.put(2)
    with pytest.raises(Busy, match="owner: mailbox full"):
        box.put(3)
    assert firsts == [owner]
    assert [box.get(), box.get()] == [1, 2]
    box.put(4)
    assert firsts == [owner, owner]
    assert box.high_water == 2


def test_closed_mailbox_refuses_and_drains() -> None:
    """A closed mailbox raises its owner's closed error on put; drain returns what was queued."""
    box: Mailbox[str] = Mailbox(4, lambda owner: None, _Owner("vp 0"))
    box.put("a")
    box.closed = True
    with pytest.raises(anyio.ClosedResourceError, match="vp 0 is stopped"):
        box.put("b")
    assert box.drain() == ["a"]
    assert len(box) == 0


async def test_reply_slot_delivers_value_and_error() -> None:
    """A slot hands over one value or one exception; later deliveries are ignored."""
    backend = current_backend()
    slot = backend.slot()
    reply(slot, 1)
    reply(slot, 2)
    assert await slot == 1
    failing = backend.slot()
    reply_error(failing, KeyError("boom"))
    reply(failing, 3)
    with pytest.raises(KeyError, match="boom"):
        await failing


async def test_reply_slot_wakes_a_parked_waiter() -> None:
    """A waiter parked on a slot wakes with the value set by another task."""
    slot = current_backend().slot()
    got: list[object] = []

    async def waiter() -> None:
        got.append(await slot)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        reply(slot, "ready")
    assert got == ["ready"]


async def test_cancelled_caller_leaves_the_vp_consistent() -> None:
    """A caller cancelled while waiting loses its reply; the VP and later callers carry on."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt)).vp(0)
        with anyio.move_on_after(0) as scope:
            await vp.execute(Rdmsr(msr=Msr.EFER))
        assert scope.cancelled_caught
        for _ in range(3):
            assert await vp.execute(Rdmsr(msr=Msr.EFER)) is not None
        # The cancelled action may or may not have run; either way it counted at most once.
        assert vp.statistics().actions in (3, 4)
