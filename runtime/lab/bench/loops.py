"""The event loop the bench's asyncio figures run on: asyncio's own, or uvloop (the extra ``uvloop``).

``tdvsm bench --loop uvloop`` runs every in-process asyncio measurement, the runtime and its
floors alike, on uvloop, so the ratios stay like for like; the figures' names say which loop
they ran on. trio figures are unaffected; P4's RSS probes and P5's server processes run on
asyncio's own loop.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio

from ..usage import UsageError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ("LOOPS", "asyncio_name", "loop_suffix", "run_asyncio", "use_loop", "uvloop_installed")

T = TypeVar("T")

#: The loops ``--loop`` accepts.
LOOPS: Final = ("asyncio", "uvloop")
_chosen: dict[str, str] = {"loop": "asyncio"}


def use_loop(name: str) -> None:
    """Run the asyncio figures on ``name`` from now on.

    Raises:
        UsageError: an unknown loop, or uvloop asked for but not installed.
    """
    if name not in LOOPS:
        msg = f"--loop: unknown event loop {name!r} (known: {', '.join(LOOPS)})"
        raise UsageError(msg)
    if name == "uvloop" and not uvloop_installed():
        msg = "--loop uvloop: uvloop is not installed: pip install -e '.[uvloop]'"
        raise UsageError(msg)
    _chosen["loop"] = name


def uvloop_installed() -> bool:
    """True when the ``uvloop`` extra is installed."""
    return importlib.util.find_spec("uvloop") is not None


def asyncio_name() -> str:
    """``"asyncio"`` or ``"uvloop"``: the loop asyncio figures run on (for their names)."""
    return _chosen["loop"]


def loop_suffix() -> str:
    """``""`` on asyncio's own loop, ``", uvloop"`` on uvloop: for the names of asyncio-only figures."""
    return "" if _chosen["loop"] == "asyncio" else f", {_chosen['loop']}"


def run_asyncio(func: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``anyio.run(func, *args)`` on the chosen asyncio loop."""
    options = {"use_uvloop": True} if _chosen["loop"] == "uvloop" else {}
    return anyio.run(func, *args, backend="asyncio", backend_options=options)
