"""The same story through ``tdvsm serve`` in another process and ``runtime.serve.connect``.

Starts ``tdvsm serve --unix PATH`` (a private socket, mode 0600 in a 0700 directory), then, as a
remote control plane would: creates a partition, brings up VSM on VP 0, calls into VTL1 and
inspects the committed TDX state there, pipelines batches of exits, follows the live events,
reads the Prometheus metrics and stops the server with SIGTERM.
Run: ``python examples/remote_control_plane.py [asyncio|trio]`` (the server and the client use it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import anyio

from protocol import (
    HV_VP_INDEX_SELF,
    EnablePartitionVtl,
    EnableVpVtl,
    HvStatus,
    HypercallResult,
    Msr,
    Rdmsr,
    Vtl,
    VtlCall,
    VtlReturn,
    VtlSwitched,
)
from runtime import VpNotRunning, VtlSwitchEvent
from runtime.serve import connect
from runtime.testing import long_mode_context

#: The ``tdvsm`` command installed beside this interpreter.
TDVSM = Path(sys.executable).with_name("tdvsm")


async def story(address: str) -> None:
    ok = HypercallResult(status=HvStatus.SUCCESS)
    async with connect(address) as client:
        part = await client.create_partition(vp_count=2)
        vp = part.vp(0)
        print(f"connected to {address}: partition {part.partition_id} with {part.vp_count} VPs")
        async with client.events(partitions=[part.partition_id], types=["VtlSwitch"]) as events:
            assert await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1, enable_mbec=True)) == ok
            enable = EnableVpVtl(vp_index=HV_VP_INDEX_SELF, target_vtl=Vtl.VTL1, context=long_mode_context())
            assert await vp.execute(enable) == ok
            assert await vp.execute(VtlCall()) == VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)
            switch = await anext(aiter(events))
            assert isinstance(switch, VtlSwitchEvent)
            print(f"event: VTL{switch.from_vtl} -> VTL{switch.to_vtl} (entry reason {switch.entry_reason})")
        state = await vp.tdx_state(Vtl.VTL1)
        print(f"VTL1 TDX state: long mode {state.long_mode_guest}, {state.vmcs_writes} VMCS writes")
        assert await vp.execute(VtlReturn(fast=True)) == VtlSwitched(to_vtl=Vtl.VTL0, entry_reason=0)
        try:
            await part.vp(1).execute(Rdmsr(msr=Msr.LSTAR))
        except VpNotRunning as exc:  # the in-process exception, across the wire
            print(f"VP 1 refused as in-process: VpNotRunning: {exc}")
        async with client.pipeline(depth=2) as pipe:
            pending = [await pipe.submit(vp, [Rdmsr(msr=Msr.LSTAR)] * 64) for _ in range(8)]
            done = [len(await p.result()) for p in pending]
        print(f"pipelined {len(done)} batches: {sum(done)} actions")
        metrics = await client.metrics()
        actions = [line for line in metrics.splitlines() if line.startswith("tdvsm_vp_actions_total")]
        print(f"metrics: {actions[0]}")
    print("remote control plane: VSM up via tdvsm serve, events, pipeline, metrics")


async def main(backend: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o700)
        socket = os.path.join(directory, "control.sock")
        command = [str(TDVSM), "serve", "--unix", socket, "--backend", backend]
        async with await anyio.open_process(command, stderr=subprocess.DEVNULL) as server:
            assert server.stdout is not None
            line = b""
            while not line.endswith(b"\n"):  # the first line: "listening on unix:PATH"
                line += await server.stdout.receive()
            assert line.startswith(b"listening on "), line
            await story(line.decode().split()[-1])
            server.terminate()
            print(f"tdvsm serve exited with status {await server.wait()}")


if __name__ == "__main__":
    chosen = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    anyio.run(main, chosen, backend=chosen)
