"""The control plane's routes over a real Unix socket: shapes, typed errors, batches, msgpack."""

from __future__ import annotations

import anyio
import httpx
import msgspec
import pytest

from protocol import (
    Completed,
    ExceptionInjected,
    GetVpRegisters,
    HvRegisterName as Reg,
    HvStatus,
    HypercallResult,
    ProtocolError,
    Rdmsr,
    RegisterAssoc,
    SetVpRegisters,
    StartVirtualProcessor,
    Vtl,
    VtlCall,
    decode,
    encode,
)
from protocol._x86 import EFER_LMA, EFER_LME, EFER_SCE, Msr
from runtime import Busy, PartitionFailed, VpNotRunning
from runtime.serve import connect
from runtime.serve._openapi import openapi_document
from runtime.testing import long_mode_context
from tests.runtime.serve._harness import served, wait_until
from tests.scenarios._bringup import enter_vtl1

LSTAR = Rdmsr(msr=Msr.LSTAR)
VTL0 = Vtl.VTL0


def _http(address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=address[5:]), base_url="http://tdvsm")


async def test_partitions_are_created_listed_inspected_and_deleted() -> None:
    async with served() as s, connect(s.address) as client:
        part = await client.create_partition(vp_count=2, commit_policy="eager")
        assert (part.partition_id, part.vp_count, part.config.commit_policy) == (0, 2, "eager")
        assert s.runtime.partition(0).vp_count == 2  # the server's runtime has it
        listing = await client.partitions()
        assert [(p.id, p.state) for p in listing.partitions] == [(0, "running")]
        assert listing.total == 1
        again = await client.partition(0)
        assert again.vp_count == 2
        stats = await part.statistics()
        assert [vp.vp_index for vp in stats.vps] == [0, 1]
        await part.stop()
        assert (await part.info()).state == "stopped"
        with pytest.raises(anyio.ClosedResourceError, match="partition 0"):
            await part.vp(0).execute(LSTAR)
        with pytest.raises(KeyError, match="no partition with id 7"):
            await client.partition(7)


async def test_execute_gives_the_in_process_outcomes() -> None:
    """The same actions give the same outcomes remotely as in-process."""
    async with served() as s, connect(s.address) as client:
        remote = (await client.create_partition(vp_count=1)).vp(0)
        local = (await s.runtime.create_partition(vp_count=1)).vp(0)
        actions = [LSTAR, VtlCall(), GetVpRegisters(names=[Reg.VSM_VP_STATUS])]
        assert [await remote.execute(a) for a in actions] == [await local.execute(a) for a in actions]
        assert await remote.execute(LSTAR) == Completed(value=0)
        assert await remote.execute(VtlCall()) == ExceptionInjected(vector=6)


async def test_batch_runs_in_order_and_stops_at_the_first_error() -> None:
    async with served() as s, connect(s.address) as client:
        part = await client.create_partition(vp_count=2)
        await enter_vtl1(s.runtime.partition(part.partition_id))
        vp = part.vp(0)
        value = 0x1234_5678_9ABC_DEF0_1122_3344_5566_7788  # 128 bits: VTL0's GDTR, set by VTL1
        batch = [
            SetVpRegisters(registers=[RegisterAssoc(name=Reg.GDTR, value=value)], target_vtl=Vtl.VTL0),
            GetVpRegisters(names=[Reg.GDTR], target_vtl=Vtl.VTL0),
        ]
        assert await vp.execute_many(batch) == [
            HypercallResult(status=HvStatus.SUCCESS, reps_completed=1),
            HypercallResult(status=HvStatus.SUCCESS, reps_completed=1, values=[value]),
        ]
        assert await vp.execute_many([]) == []
        # VP 1 is not running: the first action fails, nothing after it runs.
        with pytest.raises(VpNotRunning) as caught:
            await part.vp(1).execute_many([LSTAR, LSTAR])
        assert caught.value.index == 0  # type: ignore[attr-defined]
        assert caught.value.outcomes == []  # type: ignore[attr-defined]
        assert s.runtime.partition(0).vp(1).statistics().actions == 0


async def test_a_bad_action_in_a_batch_queues_nothing() -> None:
    """The whole batch is validated first: a bad field anywhere refuses all of it (422)."""
    async with served() as s, _http(s.address) as http:
        await s.runtime.create_partition(vp_count=1)
        body = b'[{"type":"Rdmsr","msr":3221225602},{"type":"Rdmsr","msr":1.5}]'
        reply = await http.post("/partitions/0/vps/0/execute", content=body)
        assert reply.status_code == 422
        assert reply.json() == {
            "error": "ProtocolError",
            "message": "validation: Expected `int`, got `float` - at `$[1].msr`",
            "field": "$[1].msr",
        }
        assert s.runtime.partition(0).vp(0).statistics().actions == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"vp_count": 0}', "vp_count"),
        (b'{"vp_count": "4"}', "$.vp_count"),
        (b'{"vp_cont": 4}', "vp_cont"),
        (b"[]", None),
        (b"{", None),
    ],
)
async def test_bad_partition_config_is_422_naming_the_field(body: bytes, field: str | None) -> None:
    async with served() as s, _http(s.address) as http:
        reply = await http.post("/partitions", content=body)
        assert reply.status_code == 422
        assert reply.json()["error"] == "ProtocolError"
        assert reply.json().get("field") == field
        assert s.runtime.partitions == []


async def test_busy_is_429_with_retry_after() -> None:
    async with served() as s, _http(s.address) as http, connect(s.address) as client:
        await s.runtime.create_partition(vp_count=1)
        cell = s.runtime.partition(0)._cells.cells[0]
        cell.mailbox.capacity = 0  # every post is refused as by a full mailbox
        reply = await http.post("/partitions/0/vps/0/execute", content=msgspec.json.encode(LSTAR))
        assert reply.status_code == 429
        assert reply.headers["retry-after"] == "1"
        assert reply.json()["error"] == "Busy"
        assert "mailbox full" in reply.json()["message"]
        with pytest.raises(Busy, match="mailbox full"):
            await (await client.partition(0)).vp(0).execute(LSTAR)


async def test_a_failed_partition_is_409_on_every_vp() -> None:
    """A fatal condition (DOMAIN 7.2) ends the partition: every VP answers PartitionFailed."""
    async with served() as s, connect(s.address) as client:
        part = await client.create_partition(vp_count=2)
        other = (await client.create_partition(vp_count=1)).vp(0)
        bad = msgspec.structs.replace(long_mode_context(0x9000), efer=EFER_LME | EFER_LMA | EFER_SCE)
        await part.vp(0).execute(StartVirtualProcessor(vp_index=1, target_vtl=Vtl.VTL0, context=bad))
        await wait_until(lambda: s.runtime.partition(part.partition_id).failure is not None)
        for index in (0, 1):
            with pytest.raises(PartitionFailed, match="vp 1") as caught:
                await part.vp(index).execute(LSTAR)
            assert str(caught.value) == s.runtime.partition(part.partition_id).failure
        info = await part.info()
        assert info.state == "failed"
        assert info.failure is not None
        assert "EFER" in info.failure
        assert await other.execute(LSTAR) == Completed(value=0)  # other partitions carry on


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/partitions/x", 422, "ValueError"),
        ("GET", "/partitions/99", 404, "NotFound"),
        ("GET", "/partitions/0/vps/9", 422, "ValueError"),
        ("GET", "/partitions/0/vps/0/tdx-state/2", 422, "ValueError"),
        ("GET", "/partitions/0/vps/0/registers/0?name=NOPE", 422, "ValueError"),
        ("GET", "/partitions/0/vps/0/registers/0", 422, "ProtocolError"),
        ("GET", "/nowhere", 404, "NotFound"),
        ("DELETE", "/healthz", 405, "MethodNotAllowed"),
        ("GET", "/events?partition=-1", 422, "ValueError"),
        ("GET", "/events?type=Nope", 422, "ValueError"),
        ("GET", "/events?since=3", 422, "ValueError"),
        ("GET", "/static/../../etc/passwd", 404, "NotFound"),
    ],
)
async def test_bad_requests_get_typed_errors(method: str, path: str, status: int, error: str) -> None:
    async with served() as s, _http(s.address) as http:
        await s.runtime.create_partition(vp_count=1)
        reply = await http.request(method, path)
        assert reply.status_code == status, reply.text
        assert reply.headers["content-type"].startswith("application/json")
        assert reply.json()["error"] == error


async def test_unsupported_media_type_is_415() -> None:
    async with served() as s, _http(s.address) as http:
        await s.runtime.create_partition(vp_count=1)
        reply = await http.post(
            "/partitions/0/vps/0/execute", content=b"x", headers={"content-type": "text/plain"}
        )
        assert reply.status_code == 415
        assert reply.json()["error"] == "UnsupportedMediaType"


async def test_msgpack_round_trips_128_bit_values() -> None:
    """A msgpack body is protocol frames (wide values as Wide envelopes); so is the reply."""
    async with served() as s, _http(s.address) as http:
        await enter_vtl1(await s.runtime.create_partition(vp_count=1))
        value = (1 << 127) | 0xABC
        frames = [
            encode(
                SetVpRegisters(registers=[RegisterAssoc(name=Reg.IDTR, value=value)], target_vtl=Vtl.VTL0)
            ),
            encode(GetVpRegisters(names=[Reg.IDTR], target_vtl=VTL0)),
        ]
        headers = {"content-type": "application/msgpack", "accept": "application/msgpack"}
        reply = await http.post(
            "/partitions/0/vps/0/execute", content=msgspec.msgpack.encode(frames), headers=headers
        )
        assert reply.status_code == 200
        outcomes = [decode(frame) for frame in msgspec.msgpack.decode(reply.content)]
        assert outcomes[1] == HypercallResult(status=HvStatus.SUCCESS, reps_completed=1, values=[value])
        single = await http.post("/partitions/0/vps/0/execute", content=encode(LSTAR), headers=headers)
        assert decode(single.content) == Completed(value=0)
        junk = await http.post("/partitions/0/vps/0/execute", content=b"\xc1", headers=headers)
        assert junk.status_code == 422
        assert msgspec.msgpack.decode(junk.content)["error"] == "ProtocolError"


async def test_inspections_match_in_process() -> None:
    async with served() as s, connect(s.address) as client:
        remote_part = await client.create_partition(vp_count=1)
        local = s.runtime.partition(remote_part.partition_id)
        await enter_vtl1(local)
        vp, remote = local.vp(0), remote_part.vp(0)
        for vtl in (Vtl.VTL0, Vtl.VTL1):
            assert await remote.tdx_state(vtl) == await vp.tdx_state(vtl)
            assert await remote.vtl_control(vtl) == await vp.vtl_control(vtl)
            assert await remote.sint0_message(vtl) == await vp.sint0_message(vtl)
            names = [Reg.CR0, Reg.EFER, Reg.RIP]
            assert await remote.registers(vtl, names) == await vp.registers(vtl, names)
        assert (await remote.statistics()).active_vtl == Vtl.VTL1
        assert (await client.statistics()).partitions == 1
        assert (await client.health()).status == "ok"
        with pytest.raises(ValueError, match="vtl"):
            await remote.tdx_state(Vtl.VTL2)
        with pytest.raises(ValueError, match="out of range"):
            remote_part.vp(1)


async def test_config_error_keeps_its_in_process_type() -> None:
    async with served() as s, connect(s.address) as client:
        with pytest.raises(ValueError, match="vp_count") as caught:
            await client.create_partition(vp_count=2000)
        assert isinstance(caught.value, ProtocolError)
        assert s.runtime.partitions == []


async def test_openapi_lists_exactly_the_routes() -> None:
    """The document and the app cannot drift: same paths and methods; every $ref resolves."""
    async with served() as s, _http(s.address) as http:
        document = (await http.get("/openapi.json")).json()
        assert document == msgspec.json.decode(msgspec.json.encode(openapi_document()))
        routes = {
            (route.path, method.lower()) for route in s.app.routes for method in route.methods - {"HEAD"}
        }
        documented = {(path, method) for path, item in document["paths"].items() for method in item}
        assert documented == routes
        schemas = document["components"]["schemas"]

        def refs(node: object) -> list[str]:
            if isinstance(node, dict):
                found = [node["$ref"]] if "$ref" in node else []
                return found + [r for v in node.values() for r in refs(v)]
            if isinstance(node, list):
                return [r for v in node for r in refs(v)]
            return []

        missing = {r for r in refs(document) if r.rsplit("/", 1)[1] not in schemas}
        assert missing == set()
        assert "Rdmsr" in schemas
        assert "ErrorBody" in schemas
