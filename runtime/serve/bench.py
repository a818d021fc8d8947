"""P5: the control plane over its Unix socket, against a minimal ASGI echo on the same server stack.

One server process per server backend (asyncio, trio) serves both the control plane and a
minimal ASGI echo, each on its own Unix socket, with the same ``serve`` (hypercorn under the
same accept loop, the same limits). The bench process is the client (httpx, as ``connect``):

* round trip: ``vp.execute(Rdmsr)`` alternated sample by sample with an echo of the same JSON
  body; target: p50 <= 2x the echo's p50;
* batched: 256 Rdmsr per request, pipelined two deep on one connection (``Client.pipeline``);
  target: >= 0.7x the actions per second of the same loop run in-process (``vp.execute`` in
  a tight loop, one VP, on the server's backend) measured in this run.

``tdvsm bench`` gets this figure through ``runtime/cli.py:_bench_extra`` (``lab`` may not
import this room). ``python -m runtime.serve.bench --serve DIR --backend B`` is the server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Final

import anyio
import httpx
import msgspec

from protocol import Rdmsr
from protocol._x86 import Msr

from .._host import open_runtime
from ..lab.bench._figure import Figure, percentile
from ..lab.bench.floors import interleaved
from ._app import create_app
from ._client import connect
from ._server import serve
from ._sockets import Address

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

__all__ = ("BATCH", "echo", "measure_p5")

#: Actions per request of the batched figure (PERFORMANCE.md P5).
BATCH: Final = 256
_ACTION: Final = Rdmsr(msr=Msr.LSTAR)


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """The floor: a minimal ASGI app that answers a request with its own body."""
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _serve_both(directory: str) -> None:
    async with open_runtime(seed=1) as rt, anyio.create_task_group() as tg:
        await tg.start(serve, create_app(rt), Address(path=os.path.join(directory, "control.sock")))
        await tg.start(serve, echo, Address(path=os.path.join(directory, "echo.sock")))
        print("ready", flush=True)  # noqa: T201  # the bench waits for this line
        await anyio.to_thread.run_sync(sys.stdin.read)  # until the bench closes our stdin
        tg.cancel_scope.cancel()


async def _in_process(n: int) -> float:
    """Actions per second of a tight ``vp.execute`` loop on one VP (the batched figure's floor)."""
    async with open_runtime(seed=1) as rt:
        vp = (await rt.create_partition(vp_count=1)).vp(0)
        for _ in range(n // 10):
            await vp.execute(_ACTION)
        start = time.perf_counter()
        for _ in range(n):
            await vp.execute(_ACTION)
        return n / (time.perf_counter() - start)


async def _remote(directory: str, samples: int, batches: int) -> tuple[list[int], list[int], float, float]:
    """Round-trip samples (control plane, echo), pipelined and echo-batch throughput."""
    body = msgspec.json.encode(_ACTION)
    echo_transport = httpx.AsyncHTTPTransport(uds=os.path.join(directory, "echo.sock"))
    async with (
        connect(f"unix:{directory}/control.sock") as client,
        httpx.AsyncClient(transport=echo_transport, base_url="http://echo") as echo_client,
    ):
        vp = (await client.create_partition(vp_count=1)).vp(0)

        async def control(_: int) -> object:
            return await vp.execute(_ACTION)

        async def floor(_: int) -> object:
            return (await echo_client.post("/", content=body)).content

        ours, echoed = await interleaved([control, floor], samples)
        actions = [_ACTION] * BATCH
        async with client.pipeline(depth=2) as pipe:
            await (await pipe.submit(vp, actions)).result()  # warm-up
            start = time.perf_counter()
            pending = [await pipe.submit(vp, actions) for _ in range(batches)]
            for p in pending:
                await p.result()
            pipelined = batches * BATCH / (time.perf_counter() - start)
        batch_body = msgspec.json.encode(actions)
        start = time.perf_counter()
        for _ in range(batches):
            await echo_client.post("/", content=batch_body)
        echo_batches = batches / (time.perf_counter() - start)
        return ours, echoed, pipelined, echo_batches


def _server(directory: str, backend: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "runtime.serve.bench", "--serve", directory, "--backend", backend]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        process.kill()
        msg = f"the P5 server ({backend}) did not start"
        raise RuntimeError(msg)
    return process


def measure_p5(quick: bool) -> list[Figure]:
    """P5 on each server backend (the client is asyncio): round trip and batched throughput."""
    samples, batches, loop = (300, 20, 20_000) if quick else (3_000, 200, 200_000)
    figures = []
    for backend in ("asyncio", "trio"):
        floor_rate = anyio.run(_in_process, loop, backend=backend)
        with tempfile.TemporaryDirectory(prefix="tdvsm-p5-") as directory:
            os.chmod(directory, 0o700)
            server = _server(directory, backend)
            try:
                ours, echoed, pipelined, echo_batches = anyio.run(_remote, directory, samples, batches)
            finally:
                server.communicate(timeout=30)  # closing stdin stops it
        p50, echo_p50 = percentile(ours, 0.5), percentile(echoed, 0.5)
        ratio = p50 / echo_p50
        figures.append(
            Figure(
                id="P5",
                name=f"HTTP execute p50, {backend}",
                value=p50 / 1000,
                unit="us",
                floor=echo_p50 / 1000,
                floor_name=f"minimal ASGI echo, same server stack ({backend})",
                ratio=round(ratio, 3),
                target="<=2x echo",
                met=ratio <= 2,
                detail={
                    "p99_us": percentile(ours, 0.99) / 1000,
                    "echo_p99_us": percentile(echoed, 0.99) / 1000,
                },
            )
        )
        ratio = pipelined / floor_rate
        figures.append(
            Figure(
                id="P5",
                name=f"HTTP {BATCH}/request, {backend}",
                value=pipelined,
                unit="actions/s",
                floor=floor_rate,
                floor_name=f"in-process vp.execute loop ({backend})",
                ratio=round(ratio, 3),
                target=">=0.7x in-process",
                met=ratio >= 0.7,
                detail={"echo_requests_per_s_same_body": round(echo_batches, 1), "pipeline_depth": 2},
            )
        )
    return figures


def _main(argv: list[str]) -> int:
    """The server process of the bench: ``--serve DIR --backend asyncio|trio``."""
    if len(argv) != 4 or argv[0] != "--serve" or argv[2] != "--backend":
        print("usage: python -m runtime.serve.bench --serve DIR --backend asyncio|trio", file=sys.stderr)  # noqa: T201
        return 2
    anyio.run(_serve_both, argv[1], backend=argv[3])
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
