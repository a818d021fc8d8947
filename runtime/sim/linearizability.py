"""A linearizability checker for registers: Wing-Gong-Lowe search, one register at a time.

Each guest-visible register of each (partition, VP, VTL) is a single-value register: a history
of reads and writes on it is linearizable when the operations can be put in one order that
respects real time (an operation that returned before another was invoked comes first) and in
which every read returns the latest write. Registers are independent (P-compositionality,
Horn & Kroening): a history is linearizable iff its restriction to each register is, so each
is checked alone, which keeps the search small.

Completions follow Knossos: ``ok`` (it happened, with this result), ``fail`` (it certainly did
not happen: refused, ``Busy``, withdrawn, crashed with no effect) and ``info`` (unknown: the
caller was cancelled after the action may have started, or the partition failed under it). A
failed operation is dropped; an ``info`` write may take effect at any point after its
invocation, or never; an ``info`` read constrains nothing and is dropped.

The search is Lowe's refinement of Wing & Gong's: walk the history's events, linearize a call
whose operation fits the current state, backtrack on a return that cannot be reached, and
memoise (set of linearized operations, state) pairs already explored.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

import msgspec

__all__ = ("Op", "Status", "Verdict", "check_history", "check_register")

Status: TypeAlias = Literal["ok", "fail", "info"]
_INFINITY: Final = float("inf")


class Op(msgspec.Struct, frozen=True, kw_only=True):
    """One operation on one register: invoked at ``start``, returned at ``end`` (logical times)."""

    kind: Literal["read", "write"]
    value: int
    start: int
    end: int | None  # None: no return (an info operation)
    status: Status = "ok"
    label: str = ""


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """The result for one register: linearizable, or the operations no order can explain."""

    key: str
    linearizable: bool
    operations: int
    explanation: str = ""


#: Search steps per register before the checker gives up (linearizability is NP-complete:
#: Porcupine #6). A correct history finds its order long before; giving up is reported.
SEARCH_BUDGET: Final = 200_000


def check_register(ops: list[Op], initial: int, *, budget: int = SEARCH_BUDGET) -> tuple[bool, str]:
    """Whether ``ops`` on one register starting at ``initial`` are linearizable; why not, if not.

    Gives up (and says so, as not linearizable) after ``budget`` search steps.
    """
    live = [op for op in ops if op.status != "fail" and not (op.kind == "read" and op.status == "info")]
    # Events sorted by time; at equal times calls come before returns (touching intervals overlap).
    events: list[tuple[float, int, int]] = []
    for i, op in enumerate(live):
        end: float = _INFINITY if op.end is None or op.status == "info" else op.end
        events.append((op.start, 0, i))
        events.append((end, 1, i))
    events.sort()
    # A doubly linked list over the events, so a linearized call and its return come out in O(1).
    n = len(events)
    nxt = list(range(1, n + 1))
    prv = list(range(-1, n - 1))
    head: int = 0
    call_at: dict[int, int] = {}
    ret_at: dict[int, int] = {}
    for position, (_, is_return, i) in enumerate(events):
        (ret_at if is_return else call_at)[i] = position
    must = {i for i, op in enumerate(live) if op.end is not None and op.status == "ok"}

    def unlink(position: int) -> None:
        nonlocal head
        before, after = prv[position], nxt[position]
        if before >= 0:
            nxt[before] = after
        else:
            head = after
        if after < n:
            prv[after] = before

    def relink(position: int) -> None:
        nonlocal head
        before, after = prv[position], nxt[position]
        if before >= 0:
            nxt[before] = position
        else:
            head = position
        if after < n:
            prv[after] = position

    state = initial
    linearized = 0  # bitset of the live operations placed in the order so far
    missing = len(must)  # ok operations not placed yet: 0 means a witness order exists
    done: set[tuple[int, int]] = set()
    stack: list[tuple[int, int]] = []  # (operation, state before it)
    position = head
    while missing:
        budget -= 1
        if budget < 0:
            unexplained = [live[i] for i in sorted(must) if not linearized >> i & 1]
            return False, "search budget exhausted (likely not linearizable): " + _explain(
                unexplained, initial
            )
        if position < n and not events[position][1]:  # a call: try to place it here
            i = events[position][2]
            op = live[i]
            after = op.value if op.kind == "write" else state
            key = (linearized | 1 << i, after)
            if (op.kind == "write" or op.value == state) and key not in done:
                done.add(key)
                stack.append((i, state))
                state = after
                linearized |= 1 << i
                missing -= i in must
                unlink(call_at[i])
                unlink(ret_at[i])
                position = head
            else:
                position = nxt[position]
            continue
        # A return (or the end) before its call was placed: undo the last placement.
        if not stack:
            break
        i, state = stack.pop()
        linearized &= ~(1 << i)
        missing += i in must
        relink(ret_at[i])
        relink(call_at[i])
        position = nxt[call_at[i]]
    if not missing:
        return True, ""
    unexplained = [live[i] for i in sorted(must)]
    return False, _explain(unexplained, initial)


def _explain(ops: list[Op], initial: int) -> str:
    shown = ", ".join(
        f"{op.kind}({op.value:#x})@[{op.start},{op.end}]{(' ' + op.label) if op.label else ''}"
        for op in ops[:12]
    )
    more = f" ... ({len(ops)} in all)" if len(ops) > 12 else ""
    return f"no order of these explains them from {initial:#x}: {shown}{more}"


def check_history(histories: dict[str, tuple[int, list[Op]]]) -> list[Verdict]:
    """Check every register's history (``key -> (initial value, operations)``), each on its own."""
    verdicts = []
    for key, (initial, ops) in histories.items():
        ok, why = check_register(ops, initial)
        verdicts.append(Verdict(key=key, linearizable=ok, operations=len(ops), explanation=why))
    return verdicts
