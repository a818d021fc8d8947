"""VP actor control messages: context loads from EnableVpVtl and StartVirtualProcessor (DOMAIN 3.3)."""

from __future__ import annotations

from actors import PartitionConfig, PartitionSupervisor, VpActor
from actors._vsm import LoadVtlContext
from protocol import HvRegisterName as Reg, Vtl
from tests.guest import long_mode_context


def _actor() -> VpActor:
    config = PartitionConfig(vp_count=2)
    return VpActor(1, config, PartitionSupervisor(0, config).view)


def test_vtl1_enable_is_processed_before_a_waiting_vtl0_start() -> None:
    """A VTL0 start queued before a VTL1 enable still sees VTL1 enabled: VTL1 runs first."""
    actor = _actor()
    actor.deliver(LoadVtlContext(vtl=Vtl.VTL0, context=long_mode_context(0x3000), start=True))
    actor.deliver(LoadVtlContext(vtl=Vtl.VTL1, context=long_mode_context(0x2000)))
    actor.apply_controls()
    assert actor.state.running
    assert actor.state.vtl1 is not None
    assert actor.state.active_vtl == Vtl.VTL1
    assert actor.registers(Vtl.VTL0, [Reg.RIP]) == {Reg.RIP: 0x3000}
    assert actor.registers(Vtl.VTL1, [Reg.RIP]) == {Reg.RIP: 0x2000}


def test_same_vtl_controls_keep_arrival_order() -> None:
    """An enable then a start of VTL1 apply in that order: the start's context wins."""
    actor = _actor()
    actor.deliver(LoadVtlContext(vtl=Vtl.VTL1, context=long_mode_context(0x2000)))
    actor.deliver(LoadVtlContext(vtl=Vtl.VTL1, context=long_mode_context(0x4000), start=True))
    actor.apply_controls()
    assert actor.state.active_vtl == Vtl.VTL1
    assert actor.registers(Vtl.VTL1, [Reg.RIP]) == {Reg.RIP: 0x4000}
    assert not actor.has_controls
