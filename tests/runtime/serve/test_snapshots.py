"""Snapshot and restore over the control plane, and a crashed action's typed 503 (real Unix socket)."""

from __future__ import annotations

import httpx
import msgspec
import pytest

from protocol import (
    HvRegisterName as Reg,
    HvStatus,
    HypercallResult,
    Rdmsr,
    RegisterAssoc,
    SetVpRegisters,
    Vtl,
)
from protocol._x86 import Msr
from runtime import ActorCrashed, PartitionFailed, RestartPolicy
from runtime.serve import connect
from runtime.serve._openapi import openapi_document
from runtime.testing import crash_at
from tests.runtime.serve._harness import served
from tests.scenarios._bringup import enter_vtl1

VTL0 = Vtl.VTL0
_NAMES = [Reg.RIP, Reg.RSP, Reg.LSTAR, Reg.CR0, Reg.EFER]
_LENIENT = RestartPolicy(max_restarts=100, period=3600.0, backoff=0.0001, backoff_max=0.001)


def _http(address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=address[5:]), base_url="http://tdvsm")


async def test_a_snapshot_restores_to_a_partition_that_carries_on_identically() -> None:
    async with served() as s, connect(s.address) as client:
        part = await client.create_partition(vp_count=2)
        await enter_vtl1(s.runtime.partition(part.partition_id))  # VTL1 may set VTL0's registers
        vp = part.vp(0)
        write = SetVpRegisters(
            target_vtl=VTL0,
            registers=[
                RegisterAssoc(name=Reg.RSP, value=0x7000),
                RegisterAssoc(name=Reg.LSTAR, value=0xFFFF_8000_0000_1000),
            ],
        )
        assert await vp.execute(write) == HypercallResult(status=HvStatus.SUCCESS, reps_completed=2)
        data = await part.snapshot()
        # The same bytes the in-process API gives for that partition.
        assert data == await s.runtime.partition(part.partition_id).snapshot()
        copy = await client.restore_partition(data)
        assert copy.partition_id != part.partition_id
        assert (copy.vp_count, copy.config) == (part.vp_count, part.config)
        assert (await copy.info()).state == "running"
        assert await copy.vp(0).registers(VTL0, _NAMES) == await vp.registers(VTL0, _NAMES)
        for target in (part, copy):  # both carry on alike
            assert await target.vp(0).execute(Rdmsr(msr=Msr.LSTAR)) == await vp.execute(Rdmsr(msr=Msr.LSTAR))
        assert [p.id for p in (await client.partitions()).partitions] == [
            part.partition_id,
            copy.partition_id,
        ]


async def test_damaged_or_mistyped_snapshots_are_refused_and_create_nothing() -> None:
    async with served() as s, connect(s.address) as client:
        part = await client.create_partition(vp_count=1)
        data = await part.snapshot()
        damaged = data[:-8] + b"00000000"
        with pytest.raises(ValueError, match="snapshot"):
            await client.restore_partition(damaged)
        with pytest.raises(ValueError, match="snapshot"):
            await client.restore_partition(b"")
        with pytest.raises(TypeError, match="a snapshot is bytes, got str"):
            await client.restore_partition("not bytes")  # type: ignore[arg-type]
        async with _http(s.address) as http:
            reply = await http.post(
                "/partitions/restore", content=data, headers={"content-type": "application/json"}
            )
            assert reply.status_code == 415
            assert reply.json()["error"] == "UnsupportedMediaType"
            reply = await http.post(
                "/partitions/restore",
                content=b"\x00" * 64,
                headers={"content-type": "application/octet-stream"},
            )
            assert reply.status_code == 422
            assert reply.json()["error"] == "ProtocolError"
            reply = await http.post("/partitions/9/snapshot")
            assert (reply.status_code, reply.json()["error"]) == (404, "NotFound")
        assert len(s.runtime.partitions) == 1  # nothing was created
        # A good snapshot still restores after all of that.
        assert (await client.restore_partition(data)).partition_id == 1


async def test_a_failed_partition_has_no_snapshot() -> None:
    async with served() as s, connect(s.address) as client:
        part = await client.create_partition(vp_count=1)
        s.runtime._scheduler.fail_partition(
            s.runtime.partition(part.partition_id)._cells, "injected for the test"
        )
        with pytest.raises(PartitionFailed, match="injected for the test"):
            await part.snapshot()


async def test_a_crashed_action_is_a_retriable_503_that_says_where() -> None:
    async with served(restart_policy=_LENIENT) as s, connect(s.address) as client:
        part = await client.create_partition(vp_count=2)
        await enter_vtl1(s.runtime.partition(part.partition_id))
        write = SetVpRegisters(target_vtl=VTL0, registers=[RegisterAssoc(name=Reg.RSP, value=0x1000)])
        with crash_at("stage") as crashes, pytest.raises(ActorCrashed) as caught:
            await part.vp(0).execute(write)
        assert crashes == ["stage"]
        assert (caught.value.partition_id, caught.value.vp_index) == (part.partition_id, 0)
        assert caught.value.step >= 0
        assert caught.value.retriable
        # The retry applies it; the runtime and the connection carry on.
        assert await part.vp(0).execute(write) == HypercallResult(status=HvStatus.SUCCESS, reps_completed=1)
        async with _http(s.address) as http:
            with crash_at("stage"):
                reply = await http.post(
                    f"/partitions/{part.partition_id}/vps/0/execute",
                    content=msgspec.json.encode(write),
                    headers={"content-type": "application/json"},
                )
        assert reply.status_code == 503
        assert reply.headers["retry-after"] == "1"
        body = reply.json()
        assert (body["error"], body["partition_id"], body["vp_index"]) == (
            "ActorCrashed",
            part.partition_id,
            0,
        )


def test_the_openapi_document_describes_snapshot_and_restore() -> None:
    paths = openapi_document()["paths"]
    snapshot = paths["/partitions/{id}/snapshot"]["post"]
    assert snapshot["responses"]["200"]["content"]["application/octet-stream"]["schema"]["type"] == "string"
    restore = paths["/partitions/restore"]["post"]
    assert "application/octet-stream" in restore["requestBody"]["content"]
    assert "201" in restore["responses"]
    assert "503" in restore["responses"]
