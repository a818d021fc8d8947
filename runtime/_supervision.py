"""Supervision: the restart policy of partition supervisors, restart intensity, backoff and timers.

OTP semantics (one_for_one over a partition's VPs): a VP whose step crashed is restarted from
its last committed state, after a backoff; if more than ``max_restarts`` restarts of one
partition fall within ``period`` seconds, the partition fails (``PartitionFailed``) instead,
and every other partition carries on. The defaults are OTP's (1 restart in 5 s): the limit is
explicit, unlike Akka's unlimited restarts.

Backoff and intensity use the event loop's clock, which is virtual under trio's ``MockClock``
(what ``tdvsm sim`` runs on); the jitter comes from a ``random.Random`` seeded by the runtime's
seed, so a seeded simulation restarts at the same virtual instants every time. One timer task
per runtime runs the delayed work (restarts, paused VPs of a simulation).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

if TYPE_CHECKING:
    import random
    from collections.abc import Callable

    from anyio.abc import TaskStatus

__all__ = ("RestartHistory", "RestartPolicy", "Timers")


class RestartPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How partition supervisors restart crashed VPs (``open_runtime(restart_policy=...)``).

    More than ``max_restarts`` restarts of one partition within ``period`` seconds fail the
    partition. The n-th restart within the period waits ``backoff * 2**(n-1)`` seconds, at
    most ``backoff_max``, times a random factor in ``[1, 1 + jitter)``.
    """

    max_restarts: int = 1
    period: float = 5.0
    backoff: float = 0.001
    backoff_max: float = 1.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ValueError:
            return ValueError(f"RestartPolicy.{field}: {why}, got {getattr(self, field)!r}")

        if type(self.max_restarts) is not int or self.max_restarts < 0:
            raise bad("max_restarts", "must be an int >= 0")
        for field in ("period", "backoff", "backoff_max", "jitter"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise bad(field, "must be a number >= 0")
        if not self.period > 0:
            raise bad("period", "must be > 0 seconds")


class RestartHistory:
    """The restarts of one partition within the current intensity period."""

    __slots__ = ("_policy", "_times")

    def __init__(self, policy: RestartPolicy) -> None:
        self._policy = policy
        self._times: deque[float] = deque()

    def __len__(self) -> int:
        return len(self._times)

    def admit(self, now: float, rng: random.Random) -> float | None:
        """Record one more restart at ``now``: its backoff in seconds, or None when too many."""
        policy = self._policy
        times = self._times
        while times and times[0] <= now - policy.period:
            times.popleft()
        if len(times) >= policy.max_restarts:
            return None
        times.append(now)  # bounded: at most max_restarts entries
        delay: float = min(policy.backoff_max, policy.backoff * 2.0 ** (len(times) - 1))
        return delay * (1.0 + policy.jitter * rng.random())


class Timers:
    """Callbacks due at instants of the event loop's clock, run by one task (``run``).

    ``call_at`` is synchronous (the scheduler calls it from inside a step); ties run in the
    order they were added.
    """

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._heap: list[tuple[float, int, Callable[[], Any]]] = []
        self._seq = itertools.count()
        self._wakeup = anyio.Event()

    def __len__(self) -> int:
        return len(self._heap)

    def call_at(self, deadline: float, callback: Callable[[], Any]) -> None:
        """Run ``callback`` once the loop's clock reaches ``deadline``."""
        heapq.heappush(self._heap, (deadline, next(self._seq), callback))
        self._wakeup.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The timer task: sleep until the earliest deadline, run what is due, repeat."""
        task_status.started()
        heap = self._heap
        while True:
            if not heap:
                await self._wakeup.wait()
                self._wakeup = anyio.Event()
                continue
            delay = heap[0][0] - self._now()
            if delay > 0:
                with anyio.move_on_after(delay):
                    await self._wakeup.wait()  # an earlier deadline may arrive meanwhile
                self._wakeup = anyio.Event()
                continue
            _, _, callback = heapq.heappop(heap)
            callback()
            await anyio.lowlevel.checkpoint()
