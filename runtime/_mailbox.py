"""Mailboxes and reply slots with a fast path per backend.

anyio's memory object streams cost 2-3x a purpose-built mailbox (PERFORMANCE.md), so the hot
path uses the backend's own primitive: an asyncio ``Future`` or a parked trio task. A
``Backend`` makes both; everything else in the runtime is backend-neutral.

A reply slot is one-shot: the scheduler fills it once with a value or an exception; if the
waiter was cancelled first, filling it is a no-op.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import outcome
import sniffio
import trio

from actors import Busy

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

__all__ = (
    "Backend",
    "Mailbox",
    "MailboxOwner",
    "ReplySlot",
    "Wakeup",
    "current_backend",
    "reply",
    "reply_error",
)

T = TypeVar("T")


class ReplySlot(Protocol):
    """A one-shot reply the caller awaits; the scheduler fills it with ``reply``/``reply_error``.

    On asyncio it is the loop's own ``Future`` (no wrapper on the hot path); on trio a slot
    that parks the waiting task. Once done (or cancelled) it ignores further results.
    """

    def done(self) -> bool: ...
    def set_result(self, value: Any, /) -> None: ...
    def set_exception(self, error: BaseException, /) -> None: ...
    def __await__(self) -> Generator[Any, None, Any]: ...


def reply(slot: ReplySlot, value: object) -> None:
    """Deliver ``value`` unless the slot is already done (e.g. its waiter was cancelled)."""
    if not slot.done():
        slot.set_result(value)


def reply_error(slot: ReplySlot, error: BaseException) -> None:
    """Deliver ``error`` unless the slot is already done."""
    if not slot.done():
        slot.set_exception(error)


class Wakeup(Protocol):
    """Parks one task (the scheduler) until ``notify`` is called."""

    def notify(self) -> None: ...
    async def wait(self) -> None: ...


class Backend(Protocol):
    """Factory of the backend-specific primitives."""

    name: str
    #: Make a reply slot (a plain attribute holding a callable: no extra call on the hot path).
    slot: Callable[[], ReplySlot]

    def wakeup(self) -> Wakeup: ...


# ---- asyncio ------------------------------------------------------------------------------------


class _AsyncioWakeup:
    __slots__ = ("_future", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._future: asyncio.Future[None] | None = None

    def notify(self) -> None:
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)

    async def wait(self) -> None:
        self._future = self._loop.create_future()
        try:
            await self._future
        finally:
            self._future = None


class _AsyncioBackend:
    name = "asyncio"

    def __init__(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        # asyncio.Future(loop=loop) is what loop.create_future makes (uvloop's too), without
        # that method's Python frame: one reply slot per action (hot path).
        self.slot: Callable[[], ReplySlot] = functools.partial(asyncio.Future, loop=loop)

    def wakeup(self) -> Wakeup:
        return _AsyncioWakeup(self._loop)


# ---- trio ---------------------------------------------------------------------------------------


class _TrioSlot:
    """A reply slot that parks the waiting trio task and reschedules it with the outcome."""

    __slots__ = ("_done", "_outcome", "_task")

    def __init__(self) -> None:
        self._task: Any = None
        self._outcome: Any = None
        self._done = False

    def done(self) -> bool:
        return self._done

    def _deliver(self, result: Any) -> None:
        self._done = True
        if self._task is not None:
            task, self._task = self._task, None
            trio.lowlevel.reschedule(task, result)
        else:
            self._outcome = result

    def set_result(self, value: Any, /) -> None:
        self._deliver(outcome.Value(value))

    def set_exception(self, error: BaseException, /) -> None:
        self._deliver(outcome.Error(error))

    def __await__(self) -> Generator[Any, None, Any]:
        # A generator, not a coroutine wrapped in one: this is the hot path of every reply.
        if self._done:
            yield from trio.lowlevel.checkpoint().__await__()  # noqa: ASYNC105  # awaited via yield from
            return self._outcome.unwrap()
        self._task = trio.lowlevel.current_task()
        parked = trio.lowlevel.wait_task_rescheduled(self._abort)  # noqa: ASYNC105  # awaited below
        return (yield from parked.__await__())

    def _abort(self, _: object) -> trio.lowlevel.Abort:
        self._task = None
        self._done = True  # a later result is dropped
        return trio.lowlevel.Abort.SUCCEEDED


class _TrioWakeup:
    __slots__ = ("_pending", "_task")

    def __init__(self) -> None:
        self._task: Any = None
        self._pending = False

    def notify(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            trio.lowlevel.reschedule(task)
        else:
            self._pending = True

    async def wait(self) -> None:
        if self._pending:
            self._pending = False
            await trio.lowlevel.checkpoint()
            return
        self._task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


class _TrioBackend:
    name = "trio"

    def __init__(self) -> None:
        self.slot: Callable[[], ReplySlot] = _TrioSlot

    def wakeup(self) -> Wakeup:
        return _TrioWakeup()


def current_backend() -> Backend:
    """The backend of the running event loop (asyncio or trio)."""
    library = sniffio.current_async_library()
    if library == "trio":
        return _TrioBackend()
    if library == "asyncio":
        return _AsyncioBackend()
    msg = f"tdvsm runs on asyncio or trio, not {library!r}"
    raise RuntimeError(msg)


# ---- mailbox ------------------------------------------------------------------------------------


class MailboxOwner(Protocol):
    """The actor a mailbox belongs to: names it in errors and says what a closed box raises."""

    def closed_error(self) -> Exception: ...


class Mailbox(Generic[T]):
    """A bounded FIFO of messages for one actor; ``put`` raises ``Busy`` when full.

    The mailbox does not wake anyone itself: ``on_first(owner)`` is called when it goes from
    empty to non-empty, so the scheduler can put the actor on its ready queue. ``owner`` also
    names the actor in errors (formatted only when one is raised) and, through
    ``owner.closed_error()``, says what a closed mailbox raises. The queue is allocated by
    the first message, so an actor that never gets mail costs no deque.
    """

    __slots__ = ("_on_first", "_owner", "capacity", "closed", "high_water", "queue")

    def __init__(self, capacity: int, on_first: Callable[[Any], None], owner: MailboxOwner) -> None:
        #: The messages, oldest first (None until the first one): the scheduler pops them
        #: directly, and tests its truth instead of calling ``len`` (hot path).
        self.queue: deque[T] | None = None
        self._on_first = on_first
        self._owner = owner
        self.capacity = capacity
        self.closed = False
        self.high_water = 0

    def __len__(self) -> int:
        queue = self.queue
        return len(queue) if queue is not None else 0

    def put(self, message: T) -> None:
        """Append ``message``; raise ``Busy`` when full and ClosedResourceError when closed."""
        queue = self.queue
        if queue is None:
            queue = self.queue = deque()
        if self.closed:
            raise self._owner.closed_error()
        depth = len(queue)
        if depth >= self.capacity:
            msg = f"{self._owner}: mailbox full ({self.capacity} messages waiting)"
            raise Busy(msg)
        queue.append(message)
        if depth + 1 > self.high_water:
            self.high_water = depth + 1
        if not depth:
            self._on_first(self._owner)

    def get(self) -> T:
        """Pop the oldest message (the caller checks ``len`` first)."""
        assert self.queue is not None  # len() > 0 implies a queue
        return self.queue.popleft()

    def withdraw(self, slot: object) -> bool:
        """Remove the queued message whose last item is ``slot``; False if it is not queued."""
        queue = self.queue
        if queue:
            for i, message in enumerate(queue):
                if message[-1] is slot:  # type: ignore[index]  # messages end with their slot
                    del queue[i]
                    return True
        return False

    def drain(self) -> list[T]:
        """Remove and return every queued message."""
        if self.queue is None:
            return []
        items = list(self.queue)
        self.queue.clear()
        return items
