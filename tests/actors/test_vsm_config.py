"""RELIABILITY B7: monotonic VSM configuration (DOMAIN 3.3, 3.4, 3.5, 3.6, 3.11; invariant 7).

A Hypothesis property test plays random sequences of VsmPartitionConfig writes,
ModifyVtlProtectionMask, EnablePartitionVtl, VsmVpSecureConfigVtl0 writes and VTL0 AP starts,
from either VTL, against a reference model written from DOMAIN.md, and checks after every step
that EnableVtlProtection never turns off once on and DefaultVtlProtectionMask never changes once
protections are on. Example tests pin the individual rules: the "always sets enabled" quirk
(Appendix B item 5), write-once protections, a VTL cannot change its own protections before
enabling them, a second EnablePartitionVtl, VTL != 1, DenyLowerVtlStartup from VTL1 only, the
uniform MBEC and the TLB lock of VsmVpSecureConfigVtl0, and the status registers' values.

Everything goes through the public runtime API. The property test draws a whole scenario and
runs it in one ``anyio.run`` per example (RELIABILITY A7), on each backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

import anyio
import pytest
from hypothesis import given, settings, strategies as st

from protocol import (
    HV_VP_INDEX_SELF,
    EnablePartitionVtl,
    EnableVpVtl,
    GetVpRegisters,
    HvRegisterName as Reg,
    HvStatus,
    HypercallResult,
    ModifyVtlProtectionMask,
    StartVirtualProcessor,
    Vtl,
    VtlCall,
    VtlReturn,
    VtlSwitched,
)
from tests.guest import checked_runtime, long_mode_context, new_partition
from tests.scenarios._bringup import enter_vtl1, ok, status
from tests.scenarios._secure import set_regs

if TYPE_CHECKING:
    from runtime import Partition, Vp

OK: Final = HvStatus.SUCCESS
DENIED: Final = HvStatus.ACCESS_DENIED
PARAM: Final = HvStatus.INVALID_PARAMETER
VALUE: Final = HvStatus.INVALID_REGISTER_VALUE
VTL_STATE: Final = HvStatus.INVALID_VTL_STATE
MMIO: Final = (0x100, 0x10F)
RAM_PAGES: Final = 0x400
GOOD_PAGES: Final = [0x200, 0x201]
BAD_PAGES: Final = [0x200, 0x105, 0x201]  # an MMIO GPN in the middle


# ---- the reference model (DOMAIN 3.3-3.6), independent of actors/ ---------------------------------


def valid_map_flags(flags: int, *, mbec: bool) -> bool:
    """DOMAIN 3.6 ``validate_vtl_gpa_flags`` (SSS never enabled on CVMs)."""
    r, w, kx, ux = flags & 1, flags & 2, flags & 4, flags & 8
    sss, pw, vpw, adjustable = flags & 0x10, flags & 0x20, flags & 0x40, flags & 0x8000
    if adjustable:
        return False
    if kx and not ux:
        return False
    if ux and not kx and not mbec:
        return False
    if (w or kx or ux or sss or pw or vpw) and not r:
        return False
    return not (sss and not (kx or ux))


def valid_default_masks(*, mbec: bool) -> set[int]:
    """Default masks VsmPartitionConfig accepts: valid flags with R and W (DOMAIN 3.4 steps 4-5)."""
    return {m for m in range(16) if m & 3 == 3 and valid_map_flags(m, mbec=mbec)}


@dataclass
class Model:
    """What DOMAIN says the partition's VSM configuration is after each step."""

    mbec: bool
    enabled: bool = False
    mask: int = 0xF
    zero_memory: bool = False
    deny: bool = False
    tlb_locked: bool = False
    vp1_started: bool = False

    @property
    def config(self) -> int:
        """The VsmPartitionConfig read-back value."""
        return int(self.enabled) | self.mask << 1 | int(self.zero_memory) << 5 | int(self.deny) << 6

    def write_config(self, caller: Vtl, target: int | None, value: int) -> HvStatus:
        """SetVpRegisters(VsmPartitionConfig): header checks (3.1), then 3.4."""
        t = caller if target is None else target
        if t > caller:
            return DENIED
        if t != Vtl.VTL1:
            return PARAM
        if value & ~0x7F:
            return VALUE
        enable, mask = bool(value & 1), value >> 1 & 0xF
        if not enable and self.enabled:
            return VALUE
        if mask not in valid_default_masks(mbec=self.mbec):
            return VALUE
        if mask != self.mask and self.enabled:
            return VALUE
        self.enabled = True  # even with bit 0 clear (Appendix B item 5)
        self.mask = mask
        self.zero_memory = bool(value & 0x20)
        self.deny = bool(value & 0x40)
        return OK

    def protect(self, caller: Vtl, target: int | None, flags: int, pages_ok: bool) -> tuple[HvStatus, int]:
        """HvCallModifyVtlProtectionMask (3.6) on a 2- or 3-page list."""
        t = caller if target is None else target
        if t > caller:
            return DENIED, 0
        if t == Vtl.VTL0:
            return PARAM, 0
        if t == caller and not self.enabled:
            return DENIED, 0
        if not valid_map_flags(flags, mbec=self.mbec):
            return VALUE, 0
        if not pages_ok:
            return HvStatus.OPERATION_DENIED, 0
        return OK, 0

    def secure_config(self, value: int) -> HvStatus:
        """SetVpRegisters(VsmVpSecureConfigVtl0) from VTL1, default target (3.5)."""
        if value & 0xC:
            return VALUE
        if bool(value & 1) != self.mbec:
            return VALUE
        self.tlb_locked = bool(value & 2)
        return OK

    def start_vp1(self) -> HvStatus:
        """StartVirtualProcessor(1, VTL0) from VTL0 (3.3)."""
        if self.deny:
            return DENIED
        if self.vp1_started:
            return HvStatus.INVALID_VP_STATE
        self.vp1_started = True
        return OK


# ---- operations and their strategies --------------------------------------------------------------

Caller = Literal[0, 1]


@dataclass(frozen=True)
class WriteConfig:
    caller: Caller
    target: int | None
    value: int


@dataclass(frozen=True)
class Protect:
    caller: Caller
    target: int | None
    flags: int
    pages_ok: bool


@dataclass(frozen=True)
class EnablePartition:
    caller: Caller
    target: int


@dataclass(frozen=True)
class SecureConfig:
    value: int


@dataclass(frozen=True)
class StartVp1:
    pass


Op = WriteConfig | Protect | EnablePartition | SecureConfig | StartVp1

_callers = st.sampled_from([0, 1])
_targets = st.sampled_from([None, 0, 1])
_config_values = st.one_of(
    st.sampled_from(
        [0x1F, 0x1E, 0x17, 0x16, 0x7, 0x6, 0xF, 0x3F, 0x5F, 0x7F, 0x1, 0x0, 0x80, 0x1F | 1 << 40]
    ),
    st.integers(0, 0x7F),
    st.integers(0, 2**64 - 1),
)
_flags = st.one_of(st.integers(0, 0xF), st.sampled_from([0x10, 0x15, 0x1D, 0x20, 0x21, 0x41, 0x8000, 0x800F]))
OPS: Final = st.lists(
    st.one_of(
        st.builds(WriteConfig, _callers, _targets, _config_values),
        st.builds(WriteConfig, st.just(1), st.just(None), _config_values),
        st.builds(Protect, _callers, _targets, _flags, st.booleans()),
        st.builds(EnablePartition, _callers, st.sampled_from([0, 1, 2, 3, 15])),
        st.builds(SecureConfig, st.integers(0, 0xF)),
        st.builds(StartVp1),
    ),
    min_size=1,
    max_size=25,
)


async def _switch_to(vp: Vp, vtl: int, model: Model) -> None:
    if vp.active_vtl == vtl:
        return
    if vtl == Vtl.VTL1:
        assert await vp.execute(VtlCall()) == VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)
    else:
        assert await vp.execute(VtlReturn(fast=True)) == VtlSwitched(to_vtl=Vtl.VTL0, entry_reason=0)
        model.tlb_locked = False  # VtlReturn releases every TLB lock VTL1 holds here


def _status(out: object) -> HvStatus:
    assert isinstance(out, HypercallResult), out
    return HvStatus(out.status)


async def _read_config(vp: Vp, model: Model) -> int:
    await _switch_to(vp, Vtl.VTL1, model)
    out = await vp.execute(GetVpRegisters(names=[Reg.VSM_PARTITION_CONFIG, Reg.VSM_VP_SECURE_CONFIG_VTL0]))
    assert isinstance(out, HypercallResult)
    assert out.status == OK, out
    assert out.values[1] == int(model.mbec) | int(model.tlb_locked) << 1
    return out.values[0]


async def _play(ops: list[Op], mbec: bool) -> None:
    """Run ``ops`` on a fresh partition; compare every status and read-back with the model."""
    model = Model(mbec=mbec)
    async with checked_runtime() as rt:
        part = await rt.create_partition(vp_count=2, ram_pages=RAM_PAGES, mmio_gpns=[MMIO])
        vp = await enter_vtl1(part, mbec=mbec)
        seen_enabled, seen_mask = False, None
        for op in ops:
            match op:
                case WriteConfig(caller, target, value):
                    await _switch_to(vp, caller, model)
                    want = model.write_config(Vtl(caller), target, value)
                    got = _status(await set_regs(vp, (Reg.VSM_PARTITION_CONFIG, value), target_vtl=target))
                case Protect(caller, target, flags, pages_ok):
                    await _switch_to(vp, caller, model)
                    want, _ = model.protect(Vtl(caller), target, flags, pages_ok)
                    gpns = GOOD_PAGES if pages_ok else BAD_PAGES
                    action = ModifyVtlProtectionMask(gpns=gpns, map_flags=flags, target_vtl=target)
                    out = await vp.execute(action)
                    got = _status(out)
                    assert isinstance(out, HypercallResult)
                    assert out.reps_completed == (len(gpns) if got == OK else 0)
                case EnablePartition(caller, target):
                    await _switch_to(vp, caller, model)
                    want = DENIED if target != Vtl.VTL1 else VTL_STATE
                    got = _status(
                        await vp.execute(EnablePartitionVtl(target_vtl=target, enable_mbec=not mbec))
                    )
                case SecureConfig(value):
                    await _switch_to(vp, Vtl.VTL1, model)
                    want = model.secure_config(value)
                    got = _status(await set_regs(vp, (Reg.VSM_VP_SECURE_CONFIG_VTL0, value)))
                case StartVp1():
                    await _switch_to(vp, Vtl.VTL0, model)
                    want = model.start_vp1()
                    start = StartVirtualProcessor(
                        vp_index=1, target_vtl=Vtl.VTL0, context=long_mode_context()
                    )
                    got = _status(await vp.execute(start))
            assert got == want, (op, model)
            config = await _read_config(vp, model)
            assert config == model.config, (op, hex(config), model)
            # B7, independent of the model: once on, protections stay on with the same default mask.
            enabled, mask = bool(config & 1), config >> 1 & 0xF
            if seen_enabled:
                assert enabled, op
                assert mask == seen_mask, op
            if enabled:
                seen_enabled, seen_mask = True, mask


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=200, deadline=None)
@given(ops=OPS, mbec=st.booleans())
def test_configuration_is_monotonic(backend: str, ops: list[Op], mbec: bool) -> None:
    """Random config/protection/enable sequences from both VTLs match DOMAIN; protections are write-once."""
    anyio.run(_play, ops, mbec, backend=backend)


# ---- example tests of the individual rules ---------------------------------------------------------


async def _config(vp: Vp) -> int:
    out = await vp.execute(GetVpRegisters(names=[Reg.VSM_PARTITION_CONFIG]))
    assert isinstance(out, HypercallResult)
    assert out.status == OK
    return out.values[0]


async def test_write_without_enable_bit_enables_protections() -> None:
    """Appendix B item 5: 0x1E (bit 0 clear, mask RWX) before enabling -> Success, reads 0x1F."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt))
        assert await _config(vp) == 0x1E  # off, default mask RWX
        assert await set_regs(vp, (Reg.VSM_PARTITION_CONFIG, 0x1E)) == ok(1)
        assert await _config(vp) == 0x1F
        # Protections are on: now a VTL1 protection change is allowed, and 0x1E is refused.
        assert await vp.execute(ModifyVtlProtectionMask(gpns=[0x200], map_flags=0)) == ok(1)
        assert await set_regs(vp, (Reg.VSM_PARTITION_CONFIG, 0x1E)) == status(VALUE)


async def test_default_mask_chosen_before_enabling_and_then_fixed() -> None:
    """Before enabling the mask may change (0x7 = RW default); after that only the same mask is accepted."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt))
        assert await set_regs(vp, (Reg.VSM_PARTITION_CONFIG, 0x7)) == ok(1)
        assert await _config(vp) == 0x7
        for value in (0x1F, 0x17, 0x6):
            assert await set_regs(vp, (Reg.VSM_PARTITION_CONFIG, value)) == status(VALUE)
        assert await set_regs(vp, (Reg.VSM_PARTITION_CONFIG, 0x27)) == ok(1)  # same mask, ZeroMemoryOnReset
        assert await _config(vp) == 0x27
        assert await set_regs(vp, (Reg.VSM_PARTITION_CONFIG, 0x7)) == ok(1)  # flags bits 5-6 are rewritten
        assert await _config(vp) == 0x7


@pytest.mark.parametrize("mbec", [False, True])
async def test_default_mask_validation(mbec: bool) -> None:
    """Masks need R and W; RW|UX (0xB) only with MBEC; RW|KX (0x7) never; bits above 6 refused."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt), mbec=mbec)
        refused = [0x1 | m << 1 for m in range(16) if m not in valid_default_masks(mbec=mbec)]
        refused += [0x80, 0x100, 1 << 63, 0x1F | 0x80]
        for value in refused:
            assert await set_regs(vp, (Reg.VSM_PARTITION_CONFIG, value)) == status(VALUE), hex(value)
        assert await _config(vp) == 0x1E  # nothing changed
        assert (0x1 | 0xB << 1 in refused) is not mbec
        assert 0x1 | 0x7 << 1 in refused


async def test_vtl_cannot_change_own_protections_before_enabling() -> None:
    """ModifyVtlProtectionMask from VTL1 (target default or VTL1) before protections are on: AccessDenied."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt))
        for target in (None, Vtl.VTL1):
            out = await vp.execute(ModifyVtlProtectionMask(gpns=[0x200], map_flags=0x1, target_vtl=target))
            assert out == status(DENIED)
        assert await set_regs(vp, (Reg.VSM_PARTITION_CONFIG, 0x1F)) == ok(1)
        assert await vp.execute(ModifyVtlProtectionMask(gpns=[0x200], map_flags=0x1)) == ok(1)


async def test_second_enable_partition_vtl_and_wrong_vtls() -> None:
    """A second EnablePartitionVtl -> InvalidVtlState from either VTL; target != 1 -> AccessDenied always."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp = part.vp(0)
        for target in (0, 2, 3, 15):
            assert await vp.execute(EnablePartitionVtl(target_vtl=target)) == status(DENIED)
        vp = await enter_vtl1(part)
        for flags in ({}, {"enable_mbec": False}):
            assert await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1, **flags)) == status(VTL_STATE)
        for target in (0, 2, 3, 15):
            assert await vp.execute(EnablePartitionVtl(target_vtl=target)) == status(DENIED)
        assert await vp.execute(VtlReturn(fast=True)) == VtlSwitched(to_vtl=Vtl.VTL0, entry_reason=0)
        assert await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1)) == status(VTL_STATE)


async def test_enable_vp_vtl_for_a_vtl_other_than_1() -> None:
    """EnableVpVtl naming VTL0, VTL2 or a value above 2: InvalidParameter; VTL1 is still enabled after."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt)).vp(0)
        assert await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1)) == ok()
        for target in (0, 2, 3, 15):
            enable = EnableVpVtl(vp_index=HV_VP_INDEX_SELF, target_vtl=target, context=long_mode_context())
            assert await vp.execute(enable) == status(PARAM)
        enable = EnableVpVtl(vp_index=HV_VP_INDEX_SELF, target_vtl=Vtl.VTL1, context=long_mode_context())
        assert await vp.execute(enable) == ok()


async def test_deny_lower_vtl_startup_only_from_vtl1() -> None:
    """VTL0 cannot write VsmPartitionConfig; VTL1's 0x5F (DenyLowerVtlStartup) denies VTL0's StartVp."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp = await enter_vtl1(part)
        assert await vp.execute(VtlReturn(fast=True)) == VtlSwitched(to_vtl=Vtl.VTL0, entry_reason=0)
        assert await set_regs(vp, (Reg.VSM_PARTITION_CONFIG, 0x5F)) == status(PARAM)
        assert await set_regs(vp, (Reg.VSM_PARTITION_CONFIG, 0x5F), target_vtl=Vtl.VTL0) == status(PARAM)
        assert await set_regs(vp, (Reg.VSM_PARTITION_CONFIG, 0x5F), target_vtl=Vtl.VTL1) == status(DENIED)
        out = await vp.execute(GetVpRegisters(names=[Reg.VSM_PARTITION_CONFIG], target_vtl=Vtl.VTL0))
        assert out == status(PARAM)
        start = StartVirtualProcessor(vp_index=2, target_vtl=Vtl.VTL0, context=long_mode_context())
        assert await vp.execute(start) == ok()  # not denied yet
        assert await vp.execute(VtlCall()) == VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)
        assert await set_regs(vp, (Reg.VSM_PARTITION_CONFIG, 0x5F)) == ok(1)
        assert await _config(vp) == 0x5F
        assert await vp.execute(VtlReturn(fast=True)) == VtlSwitched(to_vtl=Vtl.VTL0, entry_reason=0)
        start = StartVirtualProcessor(vp_index=3, target_vtl=Vtl.VTL0, context=long_mode_context())
        assert await vp.execute(start) == status(DENIED)


@pytest.mark.parametrize("commit_policy", ["batched", "eager"])
async def test_secure_config_mbec_uniform_and_tlb_lock(commit_policy: str) -> None:
    """VsmVpSecureConfigVtl0: MBEC matches the partition; the TLB lock is taken, then VtlReturn frees it."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt, commit_policy=commit_policy))
        read = GetVpRegisters(names=[Reg.VSM_VP_SECURE_CONFIG_VTL0])
        assert await vp.execute(read) == ok(1, [0x1])  # the partition's MBEC, no lock
        for value in (0x0, 0x2, 0x4 | 0x1, 0x8 | 0x1):
            assert await set_regs(vp, (Reg.VSM_VP_SECURE_CONFIG_VTL0, value)) == status(VALUE), value
        out = await set_regs(vp, (Reg.VSM_VP_SECURE_CONFIG_VTL0, 0x3), target_vtl=Vtl.VTL0)
        assert out == status(DENIED)  # the requesting VTL is the target: VTL0 may not
        assert await set_regs(vp, (Reg.VSM_VP_SECURE_CONFIG_VTL0, 0x3)) == ok(1)
        assert await vp.execute(read) == ok(1, [0x3])
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x3_0011])
        assert await set_regs(vp, (Reg.VSM_VP_SECURE_CONFIG_VTL0, 0x1)) == ok(1)  # 1 -> 0 releases
        assert await vp.execute(read) == ok(1, [0x1])
        assert await set_regs(vp, (Reg.VSM_VP_SECURE_CONFIG_VTL0, 0x3)) == ok(1)
        assert await vp.execute(VtlReturn(fast=True)) == VtlSwitched(to_vtl=Vtl.VTL0, entry_reason=0)
        assert await vp.execute(read) == status(DENIED)  # VTL0 requesting: AccessDenied
        assert await vp.execute(VtlCall()) == VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)
        assert await vp.execute(read) == ok(1, [0x1])  # VtlReturn released the lock


async def test_secure_config_without_mbec() -> None:
    """A partition without MBEC: MbecEnabled=1 refused, 0 accepted (also with the TLB lock)."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt), mbec=False)
        read = GetVpRegisters(names=[Reg.VSM_VP_SECURE_CONFIG_VTL0])
        assert await vp.execute(read) == ok(1, [0x0])
        assert await set_regs(vp, (Reg.VSM_VP_SECURE_CONFIG_VTL0, 0x1)) == status(VALUE)
        assert await set_regs(vp, (Reg.VSM_VP_SECURE_CONFIG_VTL0, 0x2)) == ok(1)
        assert await vp.execute(read) == ok(1, [0x2])
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x3_0001])


# ---- status registers (DOMAIN 3.11) -----------------------------------------------------------------

_STATUS_NAMES: Final = [Reg.VSM_CAPABILITIES, Reg.VSM_PARTITION_STATUS, Reg.VSM_VP_STATUS]


@pytest.mark.parametrize(("mbec", "partition_status"), [(False, 0x1_0003), (True, 0x31_0003)])
async def test_status_registers_through_bring_up(mbec: bool, partition_status: int) -> None:
    """Capabilities 0x2_0002; partition status 0x1_0001 -> 0x1_0003 / 0x31_0003; VP status per caller, VP."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp = part.vp(0)
        assert await vp.execute(GetVpRegisters(names=_STATUS_NAMES)) == ok(3, [0x2_0002, 0x1_0001, 0x1_0000])
        assert await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1, enable_mbec=mbec)) == ok()
        assert await vp.execute(GetVpRegisters(names=_STATUS_NAMES)) == ok(
            3, [0x2_0002, partition_status, 0x1_0000]
        )
        vp = await enter_vtl1_after_partition_enable(part)
        assert await vp.execute(GetVpRegisters(names=_STATUS_NAMES)) == ok(
            3, [0x2_0002, partition_status, 0x3_0001]
        )
        assert await set_regs(vp, (Reg.VSM_VP_SECURE_CONFIG_VTL0, int(mbec))) == ok(1)
        vp_status = 0x3_0011 if mbec else 0x3_0001
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [vp_status])
        # VP 1, started in VTL0 without VTL1: its own enablement only.
        start = StartVirtualProcessor(vp_index=1, target_vtl=Vtl.VTL0, context=long_mode_context())
        assert await vp.execute(start) == ok()
        out = await part.vp(1).execute(GetVpRegisters(names=_STATUS_NAMES))
        assert out == ok(3, [0x2_0002, partition_status, 0x1_0000])


async def enter_vtl1_after_partition_enable(part: Partition) -> Vp:
    """EnableVpVtl(SELF) and VtlCall on VP 0 of a partition whose VTL1 is already enabled."""
    vp = part.vp(0)
    enable = EnableVpVtl(vp_index=HV_VP_INDEX_SELF, target_vtl=Vtl.VTL1, context=long_mode_context(0x10_0000))
    assert await vp.execute(enable) == ok()
    assert await vp.execute(VtlCall()) == VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)
    return vp


async def test_capabilities_report_shared_dr6() -> None:
    """VsmCapabilities has Dr6Shared (bit 0) on a platform that shares DR6: 0x2_0003."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt, dr6_shared=True)).vp(0)
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_CAPABILITIES])) == ok(1, [0x2_0003])


async def test_without_access_vsm_vtl0_is_denied() -> None:
    """access_vsm=False: VTL0 reading any VSM status register -> AccessDenied; VTL1 still reads them."""
    async with checked_runtime() as rt:
        part = await new_partition(rt, access_vsm=False)
        vp = part.vp(0)
        for name in _STATUS_NAMES:
            assert await vp.execute(GetVpRegisters(names=[name])) == status(DENIED)
        out = await vp.execute(GetVpRegisters(names=[Reg.VSM_CODE_PAGE_OFFSETS, Reg.VSM_VP_STATUS]))
        assert out == status(DENIED, 1, [0x2_600F])  # the prefix before the refused element
        vp = await enter_vtl1(part)
        assert await vp.execute(GetVpRegisters(names=_STATUS_NAMES)) == ok(3, [0x2_0002, 0x31_0003, 0x3_0001])
        assert await set_regs(vp, (Reg.VSM_PARTITION_CONFIG, 0x1F)) == ok(1)
        assert await vp.execute(VtlReturn(fast=True)) == VtlSwitched(to_vtl=Vtl.VTL0, entry_reason=0)
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == status(DENIED)


async def test_without_vsm_support() -> None:
    """vsm_available=False: partition status 0x1, capabilities 0x2_0002, EnablePartitionVtl AccessDenied."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt, vsm_available=False)).vp(0)
        assert await vp.execute(GetVpRegisters(names=_STATUS_NAMES)) == ok(3, [0x2_0002, 0x1, 0x1_0000])
        assert await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1)) == status(DENIED)
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_PARTITION_STATUS])) == ok(1, [0x1])
