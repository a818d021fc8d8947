"""What a bench figure is: the measured value, its floor from the same run, the ratio and the target."""

from __future__ import annotations

import msgspec

__all__ = ("BenchReport", "Figure", "percentile", "render_table")


class Figure(msgspec.Struct, frozen=True, kw_only=True):
    """One measured figure, its floor from the same run, the ratio and the target."""

    id: str
    name: str
    value: float
    unit: str
    floor: float | None
    floor_name: str
    ratio: float | None
    target: str
    met: bool | None
    detail: dict[str, float | str] = {}


class BenchReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``tdvsm bench`` measured."""

    schema: str
    quick: bool
    python: str
    platform: str
    cpus: int
    figures: list[Figure]


def percentile(values: list[int], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def render_table(figures: list[Figure]) -> str:
    """The figures as a plain-text table, one line each."""
    lines = [
        f"{'id':<4}{'figure':<62}{'value':>20}{'floor':>12}{'ratio':>9}  {'met':<5}target",
    ]
    for f in figures:
        floor = _num(f.floor) if f.floor is not None else "-"
        ratio = f"{f.ratio:.3g}x" if f.ratio is not None else "-"
        met = "-" if f.met is None else "yes" if f.met else "NO"
        value = f"{_num(f.value)} {f.unit}"
        lines.append(f"{f.id:<4}{f.name[:61]:<62}{value:>20}{floor:>12}{ratio:>9}  {met:<5}{f.target}")
    return "\n".join(lines)
