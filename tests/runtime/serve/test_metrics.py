"""``/metrics``: Prometheus text a scraper parses, with the runtime's counters and the app's own."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from protocol import (
    CR0_ET,
    CR0_PE,
    CR0_PG,
    HvRegisterName as Reg,
    Intercepted,
    MovToCr,
    Rdmsr,
    SetVpRegisters,
    Vtl,
)
from protocol._x86 import Msr
from runtime import VpNotRunning, open_runtime
from runtime.serve import connect, create_app
from tests.runtime.serve._harness import served, wait_until
from tests.scenarios._secure import arm, enable_synic, reg, return_to_vtl0, s1_setup

LSTAR = Rdmsr(msr=Msr.LSTAR)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_counters_match_the_runtime_and_the_apps_own_actions() -> None:
    async with served() as s, connect(s.address) as client:
        remote = (await client.create_partition(vp_count=2)).vp(0)
        for _ in range(5):
            await remote.execute(LSTAR)
        local = s.runtime.partition(0).vp(0)
        for _ in range(3):
            await local.execute(LSTAR)  # in-process: in the runtime's counters, not the app's
        await local.tdx_state(Vtl.VTL0)
        samples = _samples(await client.metrics())
        stats = s.runtime.partition(0).statistics()
        assert samples["tdvsm_actions_total", (("action", "Rdmsr"), ("outcome", "Completed"))] == 5
        assert samples["tdvsm_action_latency_seconds_count", (("action", "Rdmsr"),)] == 5
        assert samples["tdvsm_action_latency_seconds_bucket", (("action", "Rdmsr"), ("le", "+Inf"))] == 5
        assert samples["tdvsm_vp_actions_total", ()] == 8
        assert samples["tdvsm_commits_total", ()] == sum(vp.commits for vp in stats.vps) > 0
        assert samples["tdvsm_vmcs_writes_total", ()] == sum(vp.vmcs_writes for vp in stats.vps)
        assert samples["tdvsm_vmcs_reads_total", ()] == sum(vp.vmcs_reads for vp in stats.vps)
        assert samples["tdvsm_partitions", (("state", "running"),)] == 1
        assert samples["tdvsm_vps", ()] == 2
        assert samples["tdvsm_connections", ()] >= 1  # this client's
        assert samples["tdvsm_http_requests_in_flight", ()] == 1  # the scrape itself


async def test_a_mixed_batch_counts_each_action_by_its_outcome() -> None:
    """Runs of one (action, outcome) type are counted together; a batch's error counts too."""
    async with served() as s, connect(s.address) as client:
        part = await client.create_partition(vp_count=2)
        unbacked = Rdmsr(msr=0x1234)  # #GP(0): an ExceptionInjected outcome
        outcomes = await part.vp(0).execute_many([LSTAR, LSTAR, unbacked, LSTAR, unbacked, unbacked])
        assert [type(o).__name__ for o in outcomes] == ["Completed"] * 2 + [
            "ExceptionInjected",
            "Completed",
        ] + ["ExceptionInjected"] * 2
        with pytest.raises(VpNotRunning):
            await part.vp(1).execute_many([LSTAR, LSTAR])  # stops at the first: one counted
        samples = _samples(await client.metrics())
        assert samples["tdvsm_actions_total", (("action", "Rdmsr"), ("outcome", "Completed"))] == 3
        assert samples["tdvsm_actions_total", (("action", "Rdmsr"), ("outcome", "ExceptionInjected"))] == 3
        assert samples["tdvsm_actions_total", (("action", "Rdmsr"), ("outcome", "VpNotRunning"))] == 1
        assert samples["tdvsm_action_latency_seconds_count", (("action", "Rdmsr"),)] == 7
        assert samples["tdvsm_action_latency_seconds_bucket", (("action", "Rdmsr"), ("le", "+Inf"))] == 7


async def test_intercepts_and_switches_are_counted() -> None:
    async with served() as s, connect(s.address) as client:
        part = await s.runtime.create_partition(vp_count=1)
        vp = await s1_setup(part)
        await enable_synic(vp)
        await arm(vp, 0x1, cr0_mask=CR0_PG)
        await vp.execute(SetVpRegisters(registers=[reg(Reg.CR0, CR0_PE | CR0_ET)], target_vtl=Vtl.VTL0))
        await return_to_vtl0(vp)
        assert isinstance(await vp.execute(MovToCr(cr=0, value=CR0_PE | CR0_ET | CR0_PG)), Intercepted)
        samples = _samples(await client.metrics())
        assert samples["tdvsm_intercepts_total", ()] == 1
        assert samples["tdvsm_vtl_switches_total", ()] == vp.statistics().vtl_switches == 2


async def test_each_app_has_its_own_registry() -> None:
    async with open_runtime() as rt:
        first, second = create_app(rt), create_app(rt)
        await rt.create_partition(vp_count=1)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=first), base_url="http://a") as http:
            await http.post("/partitions/0/vps/0/execute", content=b'{"type":"Rdmsr","msr":3221225602}')
            text = (await http.get("/metrics")).text
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=second), base_url="http://b") as http:
            other = (await http.get("/metrics")).text
        key = ("tdvsm_actions_total", (("action", "Rdmsr"), ("outcome", "Completed")))
        assert _samples(text)[key] == 1
        assert key not in _samples(other)
        assert _samples(other)["tdvsm_vp_actions_total", ()] == 1  # the runtime's counters are shared


async def test_subscribers_are_counted() -> None:
    async with served() as s, connect(s.address) as client, client.events():
        await wait_until(lambda: s.plane.metrics.subscribers == 1)
        assert _samples(await client.metrics())["tdvsm_event_subscribers", ()] == 1
