"""The floors every figure is measured against: raw asks and a raw fleet on each backend."""

from __future__ import annotations

import statistics
import time
from collections import deque
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio
import anyio.lowlevel

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

__all__ = ("Ask", "asyncio_floor", "direct_call_ns", "handler", "interleaved", "raw_fleet", "trio_floor")


def handler(message: int) -> int:
    """The work every floor actor does per message."""
    return message + 1


Ask: TypeAlias = "Callable[[int], Awaitable[object]]"


async def interleaved(asks: list[Ask], n: int) -> list[list[int]]:
    """Time ``n`` round trips of each ask, alternating between them sample by sample.

    Alternating within one event loop lets the host's noise hit every path alike.
    """
    clock = time.perf_counter_ns
    for i in range(n // 10):
        for ask in asks:
            await ask(i)
    samples: list[list[int]] = [[] for _ in asks]
    for i in range(n):
        for ask, out in zip(asks, samples, strict=True):
            start = clock()
            await ask(i)
            out.append(clock() - start)
    return samples


@asynccontextmanager
async def asyncio_floor() -> AsyncIterator[Ask]:
    """The raw asyncio ask: an actor task fed by an ``asyncio.Queue``, replying via a Future."""
    import asyncio

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[int, asyncio.Future[int]]] = asyncio.Queue()

    async def server() -> None:
        while True:
            message, future = await queue.get()
            future.set_result(handler(message))

    async def ask(message: int) -> int:
        future: asyncio.Future[int] = loop.create_future()
        queue.put_nowait((message, future))
        return await future

    async with anyio.create_task_group() as tg:
        tg.start_soon(server)
        yield ask
        tg.cancel_scope.cancel()


@asynccontextmanager
async def trio_floor() -> AsyncIterator[Ask]:
    """trio's minimal mailbox: a deque and one parked server task, clients parked on replies."""
    import outcome
    import trio

    inbox: deque[tuple[int, Any]] = deque()
    parked: list[Any] = []

    def abort(_: object) -> trio.lowlevel.Abort:
        return trio.lowlevel.Abort.SUCCEEDED

    async def server() -> None:
        while True:
            if not inbox:
                parked.append(trio.lowlevel.current_task())
                await trio.lowlevel.wait_task_rescheduled(abort)
                continue
            message, client = inbox.popleft()
            trio.lowlevel.reschedule(client, outcome.Value(handler(message)))

    async def ask(message: int) -> int:
        inbox.append((message, trio.lowlevel.current_task()))
        if parked:
            trio.lowlevel.reschedule(parked.pop())
        result: int = await trio.lowlevel.wait_task_rescheduled(abort)
        return result

    async with anyio.create_task_group() as tg:
        tg.start_soon(server)
        yield ask
        tg.cancel_scope.cancel()


def direct_call_ns(n: int) -> float:
    class Actor:
        def ask(self, message: int) -> int:
            return handler(message)

    actor = Actor()
    batches = []
    for _ in range(20):
        start = time.perf_counter_ns()
        for i in range(n // 20):
            actor.ask(i)
        batches.append((time.perf_counter_ns() - start) / (n // 20))
    return statistics.median(batches)


@asynccontextmanager
async def raw_fleet(actors: int) -> AsyncIterator[Ask]:
    """``actors`` raw asyncio actors (a task parked on its own Queue each)."""
    import asyncio

    loop = asyncio.get_running_loop()
    queues: list[asyncio.Queue[tuple[int, asyncio.Future[int]]]] = [asyncio.Queue() for _ in range(actors)]

    async def actor(queue: asyncio.Queue[tuple[int, asyncio.Future[int]]]) -> None:
        while True:
            message, future = await queue.get()
            future.set_result(handler(message))

    async def ask(i: int) -> int:
        future: asyncio.Future[int] = loop.create_future()
        queues[i].put_nowait((i, future))
        return await future

    async with anyio.create_task_group() as tg:
        for queue in queues:
            tg.start_soon(actor, queue)
        await anyio.lowlevel.checkpoint()
        yield ask
        tg.cancel_scope.cancel()
