"""The register linearizability checker: accepts what some order explains, rejects known-bad histories."""

from __future__ import annotations

import random

import pytest

from runtime.sim.linearizability import Op, check_history, check_register


def w(value: int, start: int, end: int | None, status: str = "ok") -> Op:
    return Op(kind="write", value=value, start=start, end=end, status=status)  # type: ignore[arg-type]


def r(value: int, start: int, end: int) -> Op:
    return Op(kind="read", value=value, start=start, end=end)


@pytest.mark.parametrize(
    ("ops", "ok"),
    [
        ([w(1, 0, 1), r(1, 2, 3)], True),
        ([w(1, 0, 1), r(0, 2, 3)], False),  # a lost acknowledged write
        ([w(1, 0, 1), w(2, 2, 3), r(1, 4, 5)], False),  # a stale read
        ([w(1, 0, 3), r(1, 1, 2)], True),  # concurrent: the write may come first ...
        ([w(1, 0, 3), r(0, 1, 2)], True),  # ... or second
        ([w(1, 0, 10), w(2, 0, 10), r(2, 11, 12), r(1, 13, 14)], False),  # the value went back
        ([w(1, 0, 10), w(2, 0, 10), r(2, 11, 12), r(2, 13, 14)], True),
        ([w(1, 0, None, "info"), r(1, 2, 3)], True),  # an info write may have happened ...
        ([w(1, 0, None, "info"), r(0, 2, 3)], True),  # ... or not
        ([w(1, 0, None, "info"), r(1, 2, 3), r(0, 4, 5)], False),  # but not undone afterwards
        ([w(1, 0, 1, "fail"), r(1, 2, 3)], False),  # a failed write never happened
        ([r(0, 0, 1), w(5, 2, 3), r(5, 4, 5), w(6, 6, 7), r(6, 8, 9)], True),
    ],
    ids=[
        "read-own-write",
        "lost-write",
        "stale-read",
        "overlap-after",
        "overlap-before",
        "went-back",
        "last-writer",
        "info-applied",
        "info-not-applied",
        "info-undone",
        "failed-write-seen",
        "sequential",
    ],
)
def test_known_histories(ops: list[Op], ok: bool) -> None:
    """Each history is judged as its comment says (the self-test C1 asks for)."""
    linearizable, why = check_register(ops, 0)
    assert linearizable is ok
    assert bool(why) is not ok


def test_a_long_sequential_history_is_checked_quickly_and_right() -> None:
    """300 operations of a correct register pass; corrupting one read makes them fail."""
    rng = random.Random(4)
    ops: list[Op] = []
    value = 0
    t = 0
    for _ in range(300):
        if rng.random() < 0.5:
            value = rng.randrange(5)
            ops.append(w(value, t, t + 1))
        else:
            ops.append(r(value, t, t + 1))
        t += 2
    assert check_register(ops, 0)[0]
    index = next(i for i in range(150, 300) if ops[i].kind == "read")
    ops[index] = r(ops[index].value + 7, ops[index].start, ops[index].end)  # type: ignore[operator]
    assert not check_register(ops, 0)[0]


def test_histories_are_checked_per_register() -> None:
    """P-compositionality: one bad register is reported, the other is not."""
    verdicts = check_history({"a": (0, [w(1, 0, 1), r(1, 2, 3)]), "b": (0, [w(1, 0, 1), r(0, 2, 3)])})
    assert [(v.key, v.linearizable) for v in verdicts] == [("a", True), ("b", False)]
    assert "no order" in verdicts[1].explanation
