"""End-to-end smoke: the API.md entry point works on both backends."""

from __future__ import annotations

from protocol import EnablePartitionVtl, HvStatus, HypercallResult, Vtl
from tests.guest import checked_runtime, new_partition


async def test_enable_partition_vtl_succeeds() -> None:
    """API.md's example: EnablePartitionVtl from VTL0 on VP 0 returns Success."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        out = await part.vp(0).execute(EnablePartitionVtl(target_vtl=Vtl.VTL1, enable_mbec=True))
        assert out == HypercallResult(status=HvStatus.SUCCESS)
