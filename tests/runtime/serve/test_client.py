"""The client on both backends: a lost connection is typed, pipelined batches run in order."""

from __future__ import annotations

import os
import tempfile

import anyio
import pytest

from protocol import GetVpRegisters, HvRegisterName as Reg, Rdmsr, RegisterAssoc, SetVpRegisters, Vtl
from protocol._x86 import Msr
from runtime import Busy, VpNotRunning, open_runtime
from runtime.serve import ConnectionLost, Limits, connect, create_app, serve
from runtime.serve._sockets import Address
from tests.runtime.serve._harness import served, wait_until
from tests.scenarios._bringup import enter_vtl1

LSTAR = Rdmsr(msr=Msr.LSTAR)


async def test_nobody_listening_is_connection_lost() -> None:
    async with connect("unix:/nonexistent/tdvsm.sock") as client:
        with pytest.raises(ConnectionLost, match="connection lost during GET /healthz"):
            await client.health()
    with pytest.raises(ValueError, match="unix:PATH or http://HOST:PORT"):
        async with connect("tcp://127.0.0.1:1"):
            pass


async def test_a_server_that_goes_away_is_connection_lost() -> None:
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o700)
        async with open_runtime() as rt:
            app = create_app(rt)
            async with anyio.create_task_group() as tg:
                address = await tg.start(serve, app, Address(path=os.path.join(directory, "c.sock")))
                async with connect(address) as client:
                    vp = (await client.create_partition(vp_count=1)).vp(0)
                    assert await vp.execute(LSTAR) is not None
                    tg.cancel_scope.cancel()  # the server stops; the runtime carries on
                    await wait_until(lambda: not os.path.exists(address[5:]))
                    with pytest.raises(ConnectionLost):
                        await vp.execute(LSTAR)
            assert await rt.partition(0).vp(0).execute(LSTAR) is not None


def _set(value: int) -> SetVpRegisters:
    return SetVpRegisters(registers=[RegisterAssoc(name=Reg.GDTR, value=value)], target_vtl=Vtl.VTL0)


_GET = GetVpRegisters(names=[Reg.GDTR], target_vtl=Vtl.VTL0)


async def test_pipelined_batches_run_in_submission_order() -> None:
    """Batch k reads the value batch k-1 wrote, then writes its own: any reordering shows."""
    async with served() as s, connect(s.address) as client:
        part = await client.create_partition(vp_count=1)
        await enter_vtl1(s.runtime.partition(part.partition_id))
        vp = part.vp(0)
        await vp.execute(_set(0))
        async with client.pipeline(depth=4) as pipe:
            pending = [await pipe.submit(vp, [_GET, _set(k + 1)]) for k in range(40)]
            results = [await p.result() for p in pending]
        assert [r[0].values for r in results] == [[k] for k in range(40)]  # type: ignore[union-attr]


async def test_a_failing_batch_in_a_pipeline_fails_alone() -> None:
    async with served() as s, connect(s.address) as client:
        part = await client.create_partition(vp_count=2)
        async with client.pipeline(depth=3) as pipe:
            good = await pipe.submit(part.vp(0), [LSTAR, LSTAR])
            bad = await pipe.submit(part.vp(1), [LSTAR])  # VP 1 is not running
            after = await pipe.submit(part.vp(0), [LSTAR])
            assert len(await good.result()) == 2
            with pytest.raises(VpNotRunning) as caught:
                await bad.result()
            assert caught.value.index == 0  # type: ignore[attr-defined]
            assert len(await after.result()) == 1


async def test_a_pipeline_outlives_a_thousand_requests() -> None:
    """The server sets no cap of its own on requests per connection (hypercorn's is 1,000)."""
    async with served() as s, connect(s.address) as client:
        part = await client.create_partition(vp_count=1)
        async with client.pipeline(depth=4) as pipe:
            pending = [await pipe.submit(part.vp(0), [LSTAR]) for _ in range(1_100)]
            assert [len(await p.result()) for p in pending] == [1] * 1_100
        assert s.runtime.partition(part.partition_id).vp(0).statistics().actions == 1_100


async def test_batches_after_a_connection_close_reply_are_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that ends the connection ("Connection: close" on its 3rd reply) runs nothing
    written after that request: the pipeline says so, for each batch after it."""
    from runtime.serve import _server

    monkeypatch.setattr(_server, "_UNLIMITED", 3)  # hypercorn's keep_alive_max_requests
    async with served() as s, connect(s.address) as client:
        part = await client.create_partition(vp_count=1)
        async with client.pipeline(depth=5) as pipe:
            pending = [await pipe.submit(part.vp(0), [LSTAR]) for _ in range(5)]
            assert [len(await p.result()) for p in pending[:3]] == [1, 1, 1]
            for later in pending[3:]:
                with pytest.raises(ConnectionLost, match="later batches were not run"):
                    await later.result()
            with pytest.raises(ConnectionLost, match="later batches were not run"):
                await pipe.submit(part.vp(0), [LSTAR])
        assert s.runtime.partition(part.partition_id).vp(0).statistics().actions == 3


async def test_a_pipeline_refused_at_the_connection_limit_is_busy() -> None:
    """The server's typed 503 is the in-process Busy: the caller should slow down and retry."""
    async with served(limits=Limits(max_connections=1)) as s, connect(s.address) as client:
        part = await client.create_partition(vp_count=1)  # holds the one connection (pooled)
        async with client.pipeline() as pipe:
            with pytest.raises(Busy, match="connection limit of 1"):
                await (await pipe.submit(part.vp(0), [LSTAR])).result()


async def test_a_pipeline_whose_server_goes_away_is_connection_lost() -> None:
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o700)
        async with open_runtime() as rt, anyio.create_task_group() as tg:
            address = await tg.start(serve, create_app(rt), Address(path=os.path.join(directory, "c.sock")))
            async with connect(address) as client:
                part = await client.create_partition(vp_count=1)
                async with client.pipeline(depth=2) as pipe:
                    assert len(await (await pipe.submit(part.vp(0), [LSTAR])).result()) == 1
                    tg.cancel_scope.cancel()  # the server stops (its shutdown closes idle connections)
                    with pytest.raises(ConnectionLost):
                        await (await pipe.submit(part.vp(0), [LSTAR])).result()
