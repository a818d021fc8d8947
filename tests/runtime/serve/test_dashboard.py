"""The dashboard at ``/``, driven in headless Chromium: what the page shows, checked in the page.

The server runs on loopback TCP with a token (a browser cannot reach a Unix socket); the page
logs in once with ``/?token=`` and keeps the session cookie, as a user would. With
``TDVSM_DASHBOARD_PNG=path`` the screenshot is taken after 30 s more and kept there
(assets/dashboard.png comes from it).
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from protocol import Rdmsr, VtlCall, VtlReturn
from protocol._x86 import Msr
from runtime.serve import connect
from tests.runtime.serve._chromium import CHROMIUM, open_page
from tests.runtime.serve._harness import TOKEN, served
from tests.scenarios._bringup import enter_vtl1

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs the chromium package (.ci/run installs it)")


async def test_the_dashboard_shows_partitions_rates_latencies_and_events(tmp_path: Path) -> None:
    async with served(tcp=True, token=TOKEN) as s, connect(s.address, token=TOKEN) as client:
        parts = [await client.create_partition(vp_count=4) for _ in range(3)]
        await enter_vtl1(s.runtime.partition(parts[0].partition_id))

        async def load() -> None:
            while True:
                await parts[1].vp(0).execute_many([Rdmsr(msr=Msr.LSTAR)] * 32)
                await parts[0].vp(0).execute(VtlReturn(fast=True))
                await parts[0].vp(0).execute(VtlCall())
                await anyio.sleep(0.01)

        async with anyio.create_task_group() as tg:
            tg.start_soon(load)
            async with open_page(f"{s.address}/?token={TOKEN}") as page:
                # Two polls a second apart give the first rates.
                await page.wait_for("document.getElementById('r-vp_actions').textContent !== '-'", 30)
                assert await page.evaluate("document.getElementById('link').textContent") == "live"
                rate = await page.evaluate("document.getElementById('r-vp_actions').textContent")
                assert float(rate.replace(",", "")) > 0
                rows = await page.evaluate(
                    "[...document.querySelectorAll('#partitions tbody tr')]"
                    ".map(r => [r.dataset.partition, r.children[1].textContent, r.children[2].textContent])"
                )
                assert rows == [["0", "4", "running"], ["1", "4", "running"], ["2", "4", "running"]]
                latency = await page.evaluate(
                    "Object.fromEntries([...document.querySelectorAll('#latency tbody tr')]"
                    ".map(r => [r.dataset.action, r.children[2].textContent]))"
                )
                assert {"Rdmsr", "VtlCall", "VtlReturn"} <= set(latency)
                assert latency["Rdmsr"].endswith(("\u00b5s", "ms"))
                switches = await page.wait_for(
                    "document.querySelectorAll('#events li[data-type=VtlSwitch]').length", 10
                )
                assert switches > 0
                first = await page.evaluate(
                    "document.querySelector('#events li[data-type=VtlSwitch]').textContent"
                )
                assert f"VtlSwitch p{parts[0].partition_id}/vp0" in first
                assert await page.evaluate("document.getElementById('c-partitions').textContent") == "3"
                keep = os.environ.get("TDVSM_DASHBOARD_PNG")
                if keep:  # a picture for the README: let the rate chart fill for a while first
                    await anyio.sleep(30)
                shot = Path(keep or tmp_path / "dashboard.png")
                await page.screenshot(shot)
            tg.cancel_scope.cancel()
    assert (await anyio.Path(shot).read_bytes())[:8] == b"\x89PNG\r\n\x1a\n"
