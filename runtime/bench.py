"""Placeholder: the performance suite lands in the next step."""

from __future__ import annotations


def run_bench(*, quick: bool, check: bool, only: str | None, report: str | None) -> int:
    """Not written yet."""
    del quick, check, only, report
    return 0
