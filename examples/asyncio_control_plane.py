"""An ASGI service that embeds the runtime in-process and mounts its control plane beside its routes.

The service (Starlette, served by hypercorn on a private Unix socket) has a route of its own,
``/fleet``, answered from the runtime it holds in-process, and the tdvsm control plane mounted
at ``/tdvsm``. A client then drives a partition through the mounted control plane (VSM
bring-up on VP 0 and a VTL call/return), follows the live events, reads the metrics, and asks
the service's own route what it sees: both sides share one runtime.
Run: ``python examples/asyncio_control_plane.py [asyncio|trio]`` (asyncio by default).
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import TYPE_CHECKING

import anyio
import httpx
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from protocol import (
    HV_VP_INDEX_SELF,
    EnablePartitionVtl,
    EnableVpVtl,
    HvStatus,
    HypercallResult,
    Vtl,
    VtlCall,
    VtlReturn,
    VtlSwitched,
)
from runtime import Runtime, VtlSwitchEvent, open_runtime
from runtime.serve import connect, create_app
from runtime.testing import long_mode_context

if TYPE_CHECKING:
    from starlette.requests import Request


def service(runtime: Runtime) -> Starlette:
    """The host's own app: its routes, and the control plane mounted at /tdvsm."""

    async def fleet(request: Request) -> JSONResponse:
        partitions = runtime.partitions
        in_vtl1 = sum(p.vp(i).active_vtl == Vtl.VTL1 for p in partitions for i in range(p.vp_count))
        return JSONResponse({"partitions": len(partitions), "vps_in_vtl1": in_vtl1})

    return Starlette(routes=[Route("/fleet", fleet), Mount("/tdvsm", app=create_app(runtime))])


async def serve_service(app: Starlette, path: str, stop: anyio.Event, backend: str) -> None:
    """Run ``app`` with hypercorn on a Unix socket until ``stop`` is set."""
    config = Config()
    config.bind = [f"unix:{path}"]
    config.accesslog = None
    if backend == "trio":
        from hypercorn.trio import serve
    else:
        from hypercorn.asyncio import serve
    await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


async def main(backend: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o700)
        path = os.path.join(directory, "service.sock")
        stop = anyio.Event()
        async with open_runtime(seed=1) as rt, anyio.create_task_group() as tg:
            await rt.create_partition(vp_count=2)  # the service's own partition, made in-process
            tg.start_soon(serve_service, service(rt), path, stop, backend)
            with anyio.fail_after(10):
                while not await anyio.Path(path).exists():  # noqa: ASYNC110  # hypercorn tells nothing else
                    await anyio.sleep(0.01)
            async with connect(f"unix:{path}", mount="/tdvsm") as client:
                part = await client.create_partition(vp_count=2)
                vp = part.vp(0)
                print(f"created partition {part.partition_id} through the mounted control plane")
                async with client.events(partitions=[part.partition_id], types=["VtlSwitch"]) as events:
                    ok = HypercallResult(status=HvStatus.SUCCESS)
                    assert await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1, enable_mbec=True)) == ok
                    enable = EnableVpVtl(
                        vp_index=HV_VP_INDEX_SELF, target_vtl=Vtl.VTL1, context=long_mode_context()
                    )
                    assert await vp.execute(enable) == ok
                    outcome = await vp.execute(VtlCall())
                    assert outcome == VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1), outcome
                    print(f"VP 0: VTL call -> {outcome}")
                    switch = await anext(aiter(events))
                    assert isinstance(switch, VtlSwitchEvent)
                    print(
                        f"event: VTL{switch.from_vtl} -> VTL{switch.to_vtl} on partition {switch.partition}"
                    )
                    async with httpx.AsyncClient(
                        transport=httpx.AsyncHTTPTransport(uds=path), base_url="http://service"
                    ) as http:
                        seen = (await http.get("/fleet")).json()
                    print(f"the service's own /fleet route sees {seen}")
                    assert seen == {"partitions": 2, "vps_in_vtl1": 1}
                    assert await vp.execute(VtlReturn(fast=True)) == VtlSwitched(
                        to_vtl=Vtl.VTL0, entry_reason=0
                    )
                metrics = await client.metrics()
                switches = next(
                    line for line in metrics.splitlines() if line.startswith("tdvsm_vtl_switches_total")
                )
                print(f"metrics: {switches}")
            stop.set()
        print("service stopped: its route and the mounted control plane shared one runtime")


if __name__ == "__main__":
    chosen = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    anyio.run(main, chosen, backend=chosen)
