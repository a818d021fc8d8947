"""DOMAIN 6, S3: negative enablement (cf. opentmk ``hv_error_vp_start.rs``)."""

from __future__ import annotations

import pytest

from actors import VpNotRunning
from protocol import (
    HV_PARTITION_ID_SELF,
    HV_VP_INDEX_SELF,
    EnablePartitionVtl,
    EnableVpVtl,
    ExceptionInjected,
    GetVpRegisters,
    HvRegisterName as Reg,
    HvStatus,
    StartVirtualProcessor,
    Vtl,
    VtlCall,
)
from tests.guest import checked_runtime, long_mode_context, new_partition
from tests.scenarios._bringup import ok, status


async def test_enable_vp_vtl_before_partition_vtl() -> None:
    """EnableVpVtl(0, 1, ctx) before EnablePartitionVtl gives InvalidVtlState and enables nothing."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt)).vp(0)
        for index in (0, HV_VP_INDEX_SELF):
            out = await vp.execute(
                EnableVpVtl(vp_index=index, target_vtl=Vtl.VTL1, context=long_mode_context())
            )
            assert out == status(HvStatus.INVALID_VTL_STATE)
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x1_0000])


async def test_vtl_call_before_enablement_is_ud() -> None:
    """VtlCall without VSM enabled injects #UD into VTL0; RIP does not move and VTL0 stays active."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt)).vp(0)
        before = await vp.registers(Vtl.VTL0, [Reg.RIP, Reg.RAX])
        assert await vp.execute(VtlCall()) == ExceptionInjected(vector=6)
        assert vp.active_vtl == Vtl.VTL0
        assert await vp.registers(Vtl.VTL0, [Reg.RIP, Reg.RAX]) == before


async def test_vtl_call_after_partition_enable_only_is_ud() -> None:
    """VtlCall after EnablePartitionVtl but before EnableVpVtl still injects #UD."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt)).vp(0)
        assert await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1)) == ok()
        before = await vp.registers(Vtl.VTL0, [Reg.RIP])
        assert await vp.execute(VtlCall()) == ExceptionInjected(vector=6)
        assert vp.active_vtl == Vtl.VTL0
        assert await vp.registers(Vtl.VTL0, [Reg.RIP]) == before


@pytest.mark.parametrize("target", [Vtl.VTL0, Vtl.VTL2, 3, 0xFF])
async def test_enable_partition_vtl_wrong_target_denied(target: int) -> None:
    """EnablePartitionVtl with target VTL0, VTL2 or a byte above 2 gives AccessDenied."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt)).vp(0)
        assert await vp.execute(EnablePartitionVtl(target_vtl=target)) == status(HvStatus.ACCESS_DENIED)
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_PARTITION_STATUS])) == ok(1, [0x1_0001])


@pytest.mark.parametrize(
    "flags",
    [{"enable_supervisor_shadow_stack": True}, {"enable_hardware_hvpt": True}],
    ids=["sss", "hvpt"],
)
async def test_enable_partition_vtl_unsupported_flags(flags: dict[str, bool]) -> None:
    """EnablePartitionVtl with supervisor shadow stack (or hardware HVPT) gives InvalidParameter."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt)).vp(0)
        out = await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1, **flags))
        assert out == status(HvStatus.INVALID_PARAMETER)
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_PARTITION_STATUS])) == ok(1, [0x1_0001])
        # Nothing changed: a correct enable still succeeds.
        assert await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1)) == ok()
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_PARTITION_STATUS])) == ok(1, [0x1_0003])


async def test_enable_partition_vtl_foreign_partition_id() -> None:
    """EnablePartitionVtl naming another partition gives InvalidPartitionId."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt)).vp(0)
        out = await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1, partition_id=1))
        assert out == status(HvStatus.INVALID_PARTITION_ID)


async def test_partition_without_vsm_support() -> None:
    """Without platform VSM support EnablePartitionVtl gives AccessDenied and VSM never comes up."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt, vsm_available=False)).vp(0)
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_PARTITION_STATUS])) == ok(1, [0x1])
        out = await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1, enable_mbec=True))
        assert out == status(HvStatus.ACCESS_DENIED)
        assert await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1)) == status(HvStatus.ACCESS_DENIED)
        out = await vp.execute(EnableVpVtl(vp_index=0, target_vtl=Vtl.VTL1, context=long_mode_context()))
        assert out == status(HvStatus.INVALID_VTL_STATE)
        assert await vp.execute(VtlCall()) == ExceptionInjected(vector=6)
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_PARTITION_STATUS])) == ok(1, [0x1])
        assert vp.active_vtl == Vtl.VTL0


async def test_start_vp_in_vtl1_before_enablement() -> None:
    """StartVirtualProcessor into VTL1 from VTL0 is refused: the target VTL is above the caller."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt)).vp(0)
        out = await vp.execute(
            StartVirtualProcessor(vp_index=1, target_vtl=Vtl.VTL1, context=long_mode_context())
        )
        assert out == status(HvStatus.ACCESS_DENIED)


@pytest.mark.parametrize(
    ("vp_index", "target", "partition_id", "expected"),
    [
        (0, 3, HV_PARTITION_ID_SELF, HvStatus.INVALID_PARAMETER),
        (4, 1, 7, HvStatus.INVALID_PARTITION_ID),
        (4, 1, HV_PARTITION_ID_SELF, HvStatus.INVALID_VP_INDEX),
        (0, 0, HV_PARTITION_ID_SELF, HvStatus.INVALID_PARAMETER),
        (0, 2, HV_PARTITION_ID_SELF, HvStatus.INVALID_PARAMETER),
        (0, 1, HV_PARTITION_ID_SELF, HvStatus.INVALID_VTL_STATE),
    ],
)
async def test_enable_vp_vtl_check_order_before_enablement(
    vp_index: int, target: int, partition_id: int, expected: HvStatus
) -> None:
    """EnableVpVtl's checks before the VSM state: VTL byte, partition id, VP index, VTL != 1 (DOMAIN 3.3)."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt)).vp(0)
        action = EnableVpVtl(
            vp_index=vp_index, target_vtl=target, context=long_mode_context(), partition_id=partition_id
        )
        assert await vp.execute(action) == status(expected)


@pytest.mark.parametrize(
    ("vp_index", "target", "partition_id", "expected"),
    [
        (1, 3, HV_PARTITION_ID_SELF, HvStatus.INVALID_PARAMETER),
        (1, 0, 7, HvStatus.INVALID_PARTITION_ID),
        (0, 0, HV_PARTITION_ID_SELF, HvStatus.INVALID_VP_INDEX),
        (4, 0, HV_PARTITION_ID_SELF, HvStatus.INVALID_VP_INDEX),
        (1, 2, HV_PARTITION_ID_SELF, HvStatus.ACCESS_DENIED),
    ],
)
async def test_start_vp_check_order_before_enablement(
    vp_index: int, target: int, partition_id: int, expected: HvStatus
) -> None:
    """StartVirtualProcessor's checks: VTL byte, partition id, VP index, target above caller (DOMAIN 3.3)."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        action = StartVirtualProcessor(
            vp_index=vp_index, target_vtl=target, context=long_mode_context(), partition_id=partition_id
        )
        assert await part.vp(0).execute(action) == status(expected)
        with pytest.raises(VpNotRunning):
            await part.vp(1).execute(VtlCall())
