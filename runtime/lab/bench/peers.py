"""The in-process actor frameworks P1 is compared with: thespian, pykka and xoscar.

Installed with the ``peers`` extra (``pip install -e '.[peers]'``). Each peer is an echo actor
answering ``handler(message)``, asked the way its users ask it: thespian's
``simpleSystemBase`` (synchronous, in the caller's thread), a pykka ``ThreadingActor`` (a
thread per actor, the caller blocks on a future) and an xoscar actor in the main pool of this
process (asyncio only). ``peer_ask`` gives an ``Ask`` that ``floors.interleaved`` alternates
with tdvsm's own, sample by sample in one event loop.
"""

from __future__ import annotations

import importlib.util
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

from .floors import handler

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .floors import Ask

__all__ = ("PEERS", "installed", "peer_ask")

#: Peer -> which backends it runs on ("any": synchronous, so any event loop can call it).
PEERS: Final = {"thespian": "any", "pykka": "any", "xoscar": "asyncio"}
#: How long a peer's ask may take before it counts as broken (seconds).
_TIMEOUT: Final = 5


def installed() -> list[str]:
    """The peers importable here, in ``PEERS`` order."""
    return [name for name in PEERS if importlib.util.find_spec(name) is not None]


@asynccontextmanager
async def _thespian() -> AsyncIterator[Ask]:
    from thespian.actors import Actor, ActorSystem

    class Echo(Actor):  # type: ignore[misc]  # thespian is untyped
        def receiveMessage(self, message: Any, sender: Any) -> None:  # thespian's name
            if isinstance(message, int):
                self.send(sender, handler(message))

    system = ActorSystem("simpleSystemBase")
    actor = system.createActor(Echo)

    async def ask(message: int) -> object:
        return system.ask(actor, message, _TIMEOUT)

    try:
        yield ask
    finally:
        system.shutdown()


@asynccontextmanager
async def _pykka() -> AsyncIterator[Ask]:
    import pykka

    class Echo(pykka.ThreadingActor):
        def on_receive(self, message: Any) -> Any:
            return handler(message)

    ref = Echo.start()

    async def ask(message: int) -> object:
        return ref.ask(message, timeout=_TIMEOUT)

    try:
        yield ask
    finally:
        ref.stop()


@asynccontextmanager
async def _xoscar() -> AsyncIterator[Ask]:
    import xoscar as xo

    class Echo(xo.Actor):  # type: ignore[misc]  # xoscar is untyped
        def ask(self, message: int) -> int:
            return handler(message)

    pool = await xo.create_actor_pool("127.0.0.1", n_process=0)
    async with pool:
        ref = await xo.create_actor(Echo, address=pool.external_address, uid="tdvsm-bench-echo")

        async def ask(message: int) -> object:
            return await ref.ask(message)

        yield ask


_MAKERS: Final = {"thespian": _thespian, "pykka": _pykka, "xoscar": _xoscar}


def peer_ask(name: str) -> Any:
    """An async context manager giving peer ``name``'s ask (see the module docstring)."""
    return _MAKERS[name]()
