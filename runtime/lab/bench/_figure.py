"""What a bench figure is (the value, its floor from the same run, the ratio, the target) and its table."""

from __future__ import annotations

import textwrap
from typing import Final

import msgspec

__all__ = ("TABLE_WIDTH", "BenchReport", "Figure", "percentile", "render_table")

#: The bench table fits in this many columns.
TABLE_WIDTH: Final = 100


class Figure(msgspec.Struct, frozen=True, kw_only=True):
    """One measured figure, its floor (same unit) from the same run, the ratio and the target.

    ``met`` is None when no verdict is passed: a smoke run (``--quick``), or a peer's row.
    """

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
    #: The event loop of the asyncio figures: ``"asyncio"`` (its own) or ``"uvloop"``.
    loop: str = "asyncio"


def percentile(values: list[int], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _compact(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return _num(value)


def _with_unit(value: float, unit: str, width: int) -> str:
    """``value`` and its unit in fewer than ``width`` characters (shortened when too long)."""
    for number in (_num(value), _compact(value)):
        text = f"{number}{unit}" if unit.startswith("/") else f"{number} {unit}"
        if len(text) < width:
            return text
    # "509,278 updates/s" -> "509k/s": the figure's name says what is counted.
    return f"{_compact(value)}/s" if unit.endswith("/s") else _compact(value)


# Column widths: id, figure, value, floor, ratio, target, met (they add up to TABLE_WIDTH).
_W: Final = (4, 32, 15, 15, 8, 21, 5)


def _cell(text: str, width: int) -> str:
    return text if len(text) < width else text[: width - 2] + "~"


def render_table(figures: list[Figure], *, quick: bool = False) -> str:
    """The figures as a table of at most ``TABLE_WIDTH`` columns, then what each floor is."""
    wid, wname, wvalue, wfloor, wratio, wtarget, _ = _W
    lines = []
    if quick:
        lines.append("smoke run (--quick): small sizes, ratios shown, no verdict passed")
    lines.append(
        f"{'id':<{wid}}{'figure':<{wname}}{'value':>{wvalue}}{'floor':>{wfloor}}{'ratio':>{wratio}}"
        f"  {'target':<{wtarget - 2}}{'met'}"
    )
    floors: dict[str, str] = {}
    for f in figures:
        value = _with_unit(f.value, f.unit, wvalue)
        floor = _with_unit(f.floor, f.unit, wfloor) if f.floor is not None else "-"
        ratio = f"{f.ratio:.3g}x" if f.ratio is not None else "-"
        met = "-" if f.met is None else "yes" if f.met else "NO"
        lines.append(
            f"{f.id:<{wid}}{_cell(f.name, wname):<{wname}}{value:>{wvalue}}{floor:>{wfloor}}"
            f"{ratio:>{wratio}}  {_cell(f.target, wtarget - 2):<{wtarget - 2}}{met}"
        )
        if f.floor_name:
            floors.setdefault(f.floor_name, f.id)
    if floors:
        lines.append("")
        text = "floors (measured in this run, same unit as the value): " + "; ".join(
            f"{figure} {name}" for name, figure in floors.items()
        )
        lines.extend(textwrap.wrap(text, TABLE_WIDTH, subsequent_indent="  "))
    lines.append("ratio = value / floor; targets: README 'Performance'")
    return "\n".join(lines)
