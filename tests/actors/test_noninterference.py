"""RELIABILITY B2: noninterference of a VTL0 attacker with VTL1's secrets.

A synchronous Hypothesis state machine over the sans-IO core (``VpActor`` + ``PartitionSupervisor``,
driven by ``_Core`` the way ``runtime/_steps.py`` drives them) plays a VTL0 "attacker" on
every VP against VTL1s set up with random secrets: random-but-valid VTL1 contexts loaded by
EnableVpVtl, VTL1's own WRMSRs of its private MSRs, SynIC and synthetic-timer registers set by
VTL1, VP-assist return values, CrIntercept masks, and pages VTL1 made inaccessible to VTL0.
Whenever an action switches a VP to VTL1 (a VtlCall or an intercept), VTL1 frees SINT0 (writes
HvMessageTypeNone into the slot's header: DOMAIN 7.3, EOM would not free it) and does a fast
VtlReturn, nothing else, so the attacker goes on. An attacker action may end the partition
(DOMAIN 7.2: a bad VTL0 state at VM entry, a bad StartVp context): from then on every action
raises ``PartitionFailed``, whose text must not leak either.

Properties, checked after every step (with ``check_vp_invariants`` on every VP):

* no secret value appears in anything VTL0 can observe: every outcome VTL0 receives (values,
  ``Completed`` values, intercept messages, drop reasons), the text of every exception raised to
  it, VTL0's private register file and SINT0 slot read through the inspection API. Registers
  shared between the VTLs (DOMAIN 1.3: RAX-R15 except RSP, CR2, DR0-DR3, XFEM) are *excluded*
  from that check: they are one physical copy by design. (This VTL1 never puts a secret there,
  which is checked separately: in particular a fast return must never load the assist-page
  return values into RAX/RCX.)
* the state of every VTL1 (its private registers, its modelled VMCS, VP-assist VTL control,
  SINT0 slot, per-VP VSM state, the CR-intercept registration it made for VTL0, and the
  partition's VSM state and page protections) is unchanged by VTL0's actions, except for the
  documented effects: a VtlCall sets entry reason 1; an intercept puts its message in SINT0 and
  sets entry reason 2. VTL1 becomes active only through those two.
* a VTL0 access to a page VTL1 made inaccessible never completes (it is intercepted or dropped).

Secrets come from a ``random.Random`` seeded by Hypothesis, uniform in large ranges (mostly
2**40..2**63), so an attacker value equal to a secret by chance is negligible.
"""

from __future__ import annotations

import random
import types
from typing import TYPE_CHECKING, Any, Final

import msgspec
from hypothesis import HealthCheck, event, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from actors import (
    PartitionConfig,
    PartitionFailed,
    PartitionSupervisor,
    UnsupportedAction,
    VpActor,
    VpNotRunning,
    check_vp_invariants,
)
from actors._registers import PRIVATE_RESET, SHARED_NAMES
from actors._state import GuestVsmVpState
from protocol import (
    HV_PARTITION_ID_SELF,
    HV_VP_INDEX_SELF,
    AccessKind,
    ClearMessageSlot,
    Completed,
    CrInterceptControl,
    EnablePartitionVtl,
    EnableVpVtl,
    GetVpRegisters,
    HvRegisterName as Reg,
    HvStatus,
    Hypercall,
    HypercallResult,
    InitialVpContext,
    InterceptDropped,
    Intercepted,
    InterceptPosted,
    LoadTableRegister,
    MemoryAccess,
    ModifyVtlProtectionMask,
    MovToCr,
    Rdmsr,
    RegisterAssoc,
    SetVpRegisters,
    StartVirtualProcessor,
    Vtl,
    VtlCall,
    VtlReturn,
    VtlSwitched,
    WriteVtlControl,
    Wrmsr,
    Xsetbv,
)
from protocol._x86 import (
    CR0_ET,
    CR0_NE,
    CR0_PE,
    CR0_PG,
    CR4_OSXSAVE,
    CR4_PAE,
    U64_MASK,
    Msr,
    segment,
    table,
)
from tests.guest import long_mode_context
from tests.strategies import ACTION_STRATEGIES, initial_vp_contexts, register_values, u8, u32, u64, uint

if TYPE_CHECKING:
    from protocol import Action, Outcome

VP_COUNT: Final = 3  # VP 0 and VP 1 get a VTL1; VP 2 only ever runs the attacker (if started)
VTL1_VPS: Final = (0, 1)
RAM_PAGES: Final = 512
MMIO: Final = (448, 463)
PRIVATE_NAMES: Final = tuple(sorted(PRIVATE_RESET))
SHARED: Final = tuple(sorted(SHARED_NAMES))
#: Exceptions a guest action may legitimately raise to its caller (API.md "Errors").
ALLOWED_ERRORS: Final = (PartitionFailed, VpNotRunning, UnsupportedAction, ValueError)


# ---- the synchronous driver ---------------------------------------------------------------------


class _Core:
    """One partition's actors driven synchronously, as ``BatchingScheduler`` drives them.

    A hypercall generator is resumed with the supervisor's reply; the supervisor's control
    messages are delivered to their target VPs before that, and every VP with control messages
    is woken (applies them) after the step, as the scheduler's ready queue does. A
    ``PartitionFailed`` ends every VP, as ``BatchingScheduler.fail_partition`` does.
    """

    def __init__(self, config: PartitionConfig) -> None:
        self.supervisor = PartitionSupervisor(0, config)
        self.actors = [VpActor(i, config, self.supervisor.view) for i in range(config.vp_count)]

    def run(self, index: int, action: Action) -> Outcome:
        """Execute ``action`` on VP ``index`` in its active VTL; exceptions propagate."""
        try:
            result = self.actors[index].execute(action)
            outcome = self._drive(result) if isinstance(result, types.GeneratorType) else result
        except PartitionFailed as exc:
            self.fail(str(exc))
            raise
        finally:
            self.wake()
        return outcome  # type: ignore[return-value]  # a generator was driven to its outcome

    def fail(self, reason: str) -> None:
        """End every VP of the partition (DOMAIN 7.2)."""
        for actor in self.actors:
            actor.fail(reason)

    def _drive(self, generator: Any) -> Outcome:
        reply: Any = None
        while True:
            try:
                request = generator.send(reply)
            except StopIteration as stop:
                outcome: Outcome = stop.value
                return outcome
            reply, effects = self.supervisor.handle(request)
            for target, control in effects:
                self.actors[target].deliver(control)

    def wake(self) -> None:
        """Apply waiting control messages and check every VP's invariants."""
        for actor in self.actors:
            if actor.has_controls:
                try:
                    actor.apply_controls()
                except PartitionFailed as exc:
                    self.fail(str(exc))
            check_vp_invariants(actor.state)


# ---- what VTL0 observes, and VTL1's state ----------------------------------------------------------


def _ints_and_texts(obj: object, ints: list[int], texts: list[str]) -> None:
    """Collect every integer and string inside an outcome or exception."""
    if isinstance(obj, bool) or obj is None:
        return
    if isinstance(obj, int):
        ints.append(obj)
    elif isinstance(obj, str):
        texts.append(obj)
    elif isinstance(obj, msgspec.Struct):
        for name in obj.__struct_fields__:
            _ints_and_texts(getattr(obj, name), ints, texts)
    elif isinstance(obj, list | tuple):
        for item in obj:
            _ints_and_texts(item, ints, texts)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _ints_and_texts(key, ints, texts)
            _ints_and_texts(value, ints, texts)
    elif isinstance(obj, BaseException):
        texts.extend((str(obj), repr(obj)))
        _ints_and_texts(obj.args, ints, texts)
    else:
        raise AssertionError(f"unexpected observable {obj!r}")


def _leaks(obj: object, secrets: set[int]) -> list[str]:
    """The secrets found in ``obj``: whole values, 64-bit halves of 128-bit values, or text."""
    ints: list[int] = []
    texts: list[str] = []
    _ints_and_texts(obj, ints, texts)
    found = [f"{v:#x}" for v in ints if {v, v & U64_MASK, v >> 64} & secrets]
    for text in texts:
        lowered = text.lower()
        found += [f"{s:#x} in {text!r}" for s in secrets if f"{s:x}" in lowered or str(s) in text]
    return found


def _vtl1_state(actor: VpActor) -> dict[str, Any]:
    """Everything VTL1 owns on one VP (commits VTL1 first, as an inspection does)."""
    vp = actor.state
    vp.commit(Vtl.VTL1)
    vtl1 = vp.vtls[Vtl.VTL1]
    vtl0 = vp.vtls[Vtl.VTL0]
    vsm = vp.vtl1
    return {
        "registers": {Reg(n).name: vtl1.regs.read(n) for n in PRIVATE_NAMES},
        "vmcs": dict(vtl1.vmcs),
        "registration": (vtl1.registration, vtl1.staged_registration),
        "vtl0_registration": vtl0.staged_registration or vtl0.registration,
        "return_values": (vtl1.return_rax, vtl1.return_rcx),
        "entry_reason": vtl1.entry_reason,
        "sint0_message": vtl1.sint0_message,
        "vina_asserted": vtl1.vina_asserted,
        "vsm_vp_state": None
        if vsm is None
        else {name: getattr(vsm, name) for name in GuestVsmVpState.__slots__},
    }


# ---- attacker strategies ----------------------------------------------------------------------------

_SELF_PARTITION = st.one_of(st.just(HV_PARTITION_ID_SELF), st.just(HV_PARTITION_ID_SELF), u64())
_VP_INDEX = st.one_of(st.sampled_from((HV_VP_INDEX_SELF, 0, 1, 2, 3)), u32())
_TARGET_VTL = st.one_of(st.sampled_from((None, 0, 1, 2)), st.integers(0, 15))
_REP_START = st.one_of(st.just(0), uint(12))
_NAMES = st.one_of(st.sampled_from(Reg), u32())
_MSRS = st.one_of(st.sampled_from(Msr), st.sampled_from(tuple(range(Msr.HV_SINT0, Msr.HV_SINT15 + 1))), u32())
_CONTROL_FLAGS = st.one_of(
    st.just(0),
    st.sampled_from((1 << 16, 1 << 17, 0x3FF << 17, 1 << 31, 1 << 32, 0xFFF << 32, 1 << 48, 1 << 63)),
    u64(),
)
_CONTEXTS = st.one_of(
    st.builds(long_mode_context, rip=u64(), user=st.booleans()),
    st.builds(InitialVpContext),
    initial_vp_contexts(),
)
_CR_VALUES = st.sampled_from(
    (
        CR0_PE | CR0_ET,
        CR0_PE | CR0_PG | CR0_NE | CR0_ET,
        CR4_PAE,
        CR4_OSXSAVE,
        CR4_OSXSAVE | CR4_PAE,
    )
)
_VALUES64 = st.one_of(u64(), st.integers(0, 0xFFFF), st.integers(0, (1 << 56) - 1))
#: VP 2 runs only once the attacker started it: pick it less often.
_VPS = st.sampled_from((0, 1, 0, 1, 2))
_SUPPORTED_BITS = tuple(1 << i for i in range(64) if CrInterceptControl.SUPPORTED >> i & 1)
_PLS_SSP = 1 << 27
#: VTL1's CrInterceptControl: every supported bit but MsrPlsSspWrite (whose PL3_SSP WRMSR ends
#: the partition, Appendix B item 13, which would end the attack early), or any subset.
_CONTROLS = st.one_of(
    st.just(CrInterceptControl.SUPPORTED & ~_PLS_SSP),
    st.frozensets(st.sampled_from(_SUPPORTED_BITS)).map(sum),
)


class NoninterferenceMachine(RuleBasedStateMachine):
    """A VTL0 attacker on every VP against VTL1s holding random secrets (RELIABILITY B2)."""

    def __init__(self) -> None:
        super().__init__()
        self.core: _Core | None = None
        self.secrets: set[int] = set()
        self.protected: list[int] = []
        self.rng = random.Random(0)

    # ---- set-up: VTL1 hides its secrets -------------------------------------------------------------

    def _secret(self, low: int = 1 << 40, high: int = 1 << 63) -> int:
        value = self.rng.randrange(low, high)
        self.secrets.add(value)
        return value

    def _secret_context(self) -> InitialVpContext:
        """A valid long-mode VTL1 context whose RIP, RSP, CR3 and bases are secrets.

        Valid for VM entry too (DOMAIN 7.2): RIP canonical, CR3 within 52 bits; RFLAGS has no
        room for a secret (bits 63:22 must be 0), so it is an ordinary value.
        """
        base = long_mode_context()
        canonical = 1 << 47

        def seg(attributes: int, selector: int) -> int:
            return segment(
                base=self._secret(high=canonical), limit=0xFFFF_FFFF, selector=selector, attributes=attributes
            )

        return msgspec.structs.replace(
            base,
            rip=self._secret(high=canonical),
            rsp=self._secret(),
            rflags=0x246,
            cr3=self._secret(high=1 << 52) & ~0xFFF,
            cs=seg(0xA09B, 0x08),
            ds=seg(0xC093, 0x10),
            es=seg(0xC093, 0x10),
            fs=seg(0xC093, 0x10),
            gs=seg(0xC093, 0x10),
            ss=seg(0xC093, 0x10),
            tr=seg(0x8B, 0x18),
            ldtr=seg(0x82, 0),
            idtr=table(base=self._secret(), limit=0xFFF),
            gdtr=table(base=self._secret(), limit=0x37),
        )

    def _vtl1(self, index: int, action: Action) -> Outcome:
        """VTL1 on VP ``index`` performs ``action`` (its own action: it may change VTL1 state)."""
        assert self.core is not None
        assert self.core.actors[index].state.active_vtl == Vtl.VTL1
        outcome = self.core.run(index, action)
        # VTL1's RIP moves from its secret start by the length of each instruction.
        self.secrets.add(self.core.actors[index].state.read(Vtl.VTL1, Reg.RIP))
        return outcome

    def _vtl1_set(self, index: int, values: dict[int, int]) -> None:
        registers = [RegisterAssoc(name=n, value=v) for n, v in values.items()]
        outcome = self._vtl1(index, SetVpRegisters(registers=registers))
        assert outcome == HypercallResult(status=HvStatus.SUCCESS, reps_completed=len(registers)), outcome

    def _hide_secrets(self, index: int, control: int, sint0_unmasked: bool) -> None:
        """VTL1 on VP ``index`` loads secrets into what it alone owns, then sets its intercepts."""
        canonical = 1 << 56
        for msr, value in (
            (Msr.STAR, self._secret()),
            (Msr.LSTAR, self._secret(high=canonical)),
            (Msr.CSTAR, self._secret(high=canonical)),
            (Msr.SFMASK, self._secret(1 << 31, 1 << 32)),
            (Msr.KERNEL_GS_BASE, self._secret(high=canonical)),
            (Msr.SYSENTER_CS, self._secret()),
            (Msr.SYSENTER_EIP, self._secret(high=canonical)),
            (Msr.SYSENTER_ESP, self._secret(high=canonical)),
            (Msr.TSC_AUX, self._secret(1 << 31, 1 << 32)),
            (Msr.FS_BASE, self._secret(high=canonical)),
            (Msr.GS_BASE, self._secret(high=canonical)),
            (Msr.HV_VP_ASSIST_PAGE, (self._secret(1 << 28, 1 << 40) << 12) | 1),
            (Msr.HV_SIEFP, (self._secret(1 << 28, 1 << 40) << 12) | 1),
        ):
            self.secrets.add(value)
            assert self._vtl1(index, Wrmsr(msr=msr, value=value)) == Completed()
        simp = (self._secret(1 << 28, 1 << 40) << 12) | 1
        self.secrets.add(simp)
        timers = {Reg.STIMER0_CONFIG + i: self._secret() for i in range(8)}
        sint0 = 0x30 | (0 if sint0_unmasked else 0x1_0000)
        self._vtl1_set(index, {Reg.SIPP: simp, Reg.SINT0: sint0, Reg.SCONTROL: 1, **timers})
        self._vtl1_set(
            index,
            {
                Reg.CR_INTERCEPT_CR0_MASK: self._secret(),
                Reg.CR_INTERCEPT_CR4_MASK: self._secret(),
                Reg.CR_INTERCEPT_IA32_MISC_ENABLE_MASK: self._secret(),
            },
        )
        self._vtl1_set(index, {Reg.CR_INTERCEPT_CONTROL: control})
        outcome = self._vtl1(index, WriteVtlControl(return_rax=self._secret(), return_rcx=self._secret()))
        assert outcome == Completed()

    @initialize(
        seed=st.integers(0, (1 << 64) - 1),
        mbec=st.booleans(),
        deny_startup=st.booleans(),
        eager=st.booleans(),
        sint0_unmasked=st.lists(st.booleans(), min_size=2, max_size=2),
        controls=st.lists(_CONTROLS, min_size=2, max_size=2),
        protected=st.lists(st.integers(0, MMIO[0] - 1), min_size=1, max_size=8, unique=True),
    )
    def set_up(
        self,
        seed: int,
        mbec: bool,
        deny_startup: bool,
        eager: bool,
        sint0_unmasked: list[bool],
        controls: list[int],
        protected: list[int],
    ) -> None:
        """VP 0's VTL0 enables VTL1; VTL1 hides secrets on VP 0 and VP 1 and protects pages."""
        self.rng = random.Random(seed)
        config = PartitionConfig(
            vp_count=VP_COUNT,
            ram_pages=RAM_PAGES,
            mmio_gpns=(MMIO,),
            commit_policy="eager" if eager else "batched",
        )
        self.core = core = _Core(config)
        self.protected = protected
        ok = HypercallResult(status=HvStatus.SUCCESS)
        assert core.run(0, EnablePartitionVtl(target_vtl=Vtl.VTL1, enable_mbec=mbec)) == ok
        context = self._secret_context()
        assert core.run(0, EnableVpVtl(vp_index=HV_VP_INDEX_SELF, target_vtl=Vtl.VTL1, context=context)) == ok
        assert core.run(0, VtlCall()) == VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)
        config_value = 0x1F | (0x40 if deny_startup else 0)
        self._vtl1_set(0, {Reg.VSM_PARTITION_CONFIG: config_value})
        self._hide_secrets(0, controls[0], sint0_unmasked[0])
        outcome = self._vtl1(0, ModifyVtlProtectionMask(gpns=protected, map_flags=0))
        assert outcome == HypercallResult(status=HvStatus.SUCCESS, reps_completed=len(protected))
        vp1_context = self._secret_context()
        assert self._vtl1(0, EnableVpVtl(vp_index=1, target_vtl=Vtl.VTL1, context=vp1_context)) == ok
        vp1_vtl0 = long_mode_context(0x5000)
        assert self._vtl1(0, StartVirtualProcessor(vp_index=1, target_vtl=Vtl.VTL0, context=vp1_vtl0)) == ok
        assert isinstance(self._vtl1(0, VtlReturn(fast=True)), VtlSwitched)
        # VP 1 starts in VTL1 (VTL1 runs first where it is enabled).
        assert core.actors[1].state.active_vtl == Vtl.VTL1
        self._hide_secrets(1, controls[1], sint0_unmasked[1])
        assert isinstance(self._vtl1(1, VtlReturn(fast=True)), VtlSwitched)
        for actor in core.actors:
            assert actor.state.active_vtl == Vtl.VTL0

    # ---- the attack ------------------------------------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        assert self.core is not None
        view = self.core.supervisor.view()
        return {
            "partition": (view.guest_vsm, view.vtl1, dict(view.protections)),
            **{f"vp{i}": _vtl1_state(self.core.actors[i]) for i in VTL1_VPS},
        }

    def _attack(self, index: int, action: Action) -> None:
        """VTL0 on VP ``index`` performs ``action``; check what it sees and what VTL1 kept."""
        core = self.core
        assert core is not None
        actor = core.actors[index]
        before = self._snapshot()
        active_before = [a.state.active_vtl for a in core.actors]
        assert active_before[index] == Vtl.VTL0
        observed: object
        try:
            observed = core.run(index, action)
        except ALLOWED_ERRORS as exc:
            observed = exc
        event(f"{type(action).__name__} -> {type(observed).__name__}")
        leaks = _leaks(observed, self.secrets)
        assert not leaks, f"VTL0 on vp {index} observed VTL1 secrets {leaks} in {observed!r} after {action!r}"

        # VTL1's state changed only in the documented ways.
        expected = before
        entered = False
        if isinstance(observed, VtlSwitched):
            assert isinstance(action, VtlCall), (action, observed)
            assert observed == VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)
            expected[f"vp{index}"]["entry_reason"] = 1
            entered = True
        elif isinstance(observed, Intercepted):
            assert index in VTL1_VPS
            state = expected[f"vp{index}"]
            state["entry_reason"] = 2
            state["sint0_message"] = observed.message
            entered = True
        elif isinstance(observed, InterceptPosted):  # a polling SINT0: no VTL1 entry (7.3)
            expected[f"vp{index}"]["sint0_message"] = observed.message
        assert self._snapshot() == expected, f"VTL0's {action!r} on vp {index} changed VTL1 state"
        active_after = [a.state.active_vtl for a in core.actors]
        active_before[index] = Vtl.VTL1 if entered else Vtl.VTL0
        assert active_after == active_before

        if isinstance(action, MemoryAccess) and (action.gpa >> 12) in self.protected:
            assert not isinstance(observed, Completed), f"VTL0 {action!r} of a protected page completed"
            assert isinstance(observed, Intercepted | InterceptDropped | PartitionFailed | VpNotRunning), (
                observed
            )

        if entered:
            # VTL1 frees SINT0 and goes straight back: the attacker continues.
            if actor.state.vtls[Vtl.VTL1].sint0_message is not None:
                assert self._vtl1(index, ClearMessageSlot()) == Completed()
            outcome = self._vtl1(index, VtlReturn(fast=True))
            assert outcome == VtlSwitched(to_vtl=Vtl.VTL0, entry_reason=0), outcome

    # One rule per action type, with arbitrary fields and a bias to the interesting values.

    @rule(
        vp=_VPS,
        names=st.lists(_NAMES, min_size=1, max_size=6),
        partition_id=_SELF_PARTITION,
        vp_index=_VP_INDEX,
        target_vtl=_TARGET_VTL,
        rep_start=_REP_START,
    )
    def get_vp_registers(
        self,
        vp: int,
        names: list[int],
        partition_id: int,
        vp_index: int,
        target_vtl: int | None,
        rep_start: int,
    ) -> None:
        """GetVpRegisters of any register of any VTL on any VP."""
        self._attack(
            vp,
            GetVpRegisters(
                names=names,
                partition_id=partition_id,
                vp_index=vp_index,
                target_vtl=target_vtl,
                rep_start=rep_start,
            ),
        )

    @rule(
        vp=_VPS,
        registers=st.lists(
            st.builds(RegisterAssoc, name=_NAMES, value=st.one_of(register_values(), _VALUES64)),
            min_size=1,
            max_size=6,
        ),
        partition_id=_SELF_PARTITION,
        vp_index=_VP_INDEX,
        target_vtl=_TARGET_VTL,
        rep_start=_REP_START,
    )
    def set_vp_registers(
        self,
        vp: int,
        registers: list[RegisterAssoc],
        partition_id: int,
        vp_index: int,
        target_vtl: int | None,
        rep_start: int,
    ) -> None:
        """SetVpRegisters of any register of any VTL on any VP."""
        self._attack(
            vp,
            SetVpRegisters(
                registers=registers,
                partition_id=partition_id,
                vp_index=vp_index,
                target_vtl=target_vtl,
                rep_start=rep_start,
            ),
        )

    @rule(vp=_VPS, input=st.one_of(st.just(0), u64()), control_flags=_CONTROL_FLAGS)
    def vtl_call(self, vp: int, input: int, control_flags: int) -> None:
        """VtlCall with any input and control word."""
        self._attack(vp, VtlCall(input=input, control_flags=control_flags))

    @rule(vp=_VPS, fast=st.booleans(), control_flags=_CONTROL_FLAGS, input=st.none() | u64())
    def vtl_return(self, vp: int, fast: bool, control_flags: int, input: int | None) -> None:
        """VtlReturn from VTL0 with any input and control word."""
        self._attack(vp, VtlReturn(fast=fast, control_flags=control_flags, input=input))

    @rule(vp=_VPS, vp_index=_VP_INDEX, target_vtl=st.one_of(st.sampled_from(Vtl), u8()), context=_CONTEXTS)
    def enable_vp_vtl(self, vp: int, vp_index: int, target_vtl: int, context: InitialVpContext) -> None:
        """EnableVpVtl of any VP and VTL with any context."""
        self._attack(vp, EnableVpVtl(vp_index=vp_index, target_vtl=target_vtl, context=context))

    @rule(vp=_VPS, vp_index=_VP_INDEX, target_vtl=st.one_of(st.sampled_from(Vtl), u8()), context=_CONTEXTS)
    def start_virtual_processor(
        self, vp: int, vp_index: int, target_vtl: int, context: InitialVpContext
    ) -> None:
        """StartVirtualProcessor of any VP and VTL with any context."""
        self._attack(vp, StartVirtualProcessor(vp_index=vp_index, target_vtl=target_vtl, context=context))

    @rule(vp=_VPS, action=ACTION_STRATEGIES[EnablePartitionVtl])
    def enable_partition_vtl(self, vp: int, action: EnablePartitionVtl) -> None:
        """EnablePartitionVtl again, with any target and flags."""
        self._attack(vp, action)

    @rule(
        vp=_VPS,
        data=st.data(),
        map_flags=st.one_of(st.integers(0, 0xF), u32()),
        target_vtl=_TARGET_VTL,
        rep_start=_REP_START,
    )
    def modify_vtl_protection_mask(
        self, vp: int, data: st.DataObject, map_flags: int, target_vtl: int | None, rep_start: int
    ) -> None:
        """ModifyVtlProtectionMask of protected and random pages."""
        gpn = st.one_of(st.sampled_from(self.protected), st.integers(0, RAM_PAGES), u64())
        gpns = data.draw(st.lists(gpn, min_size=1, max_size=4))
        self._attack(
            vp,
            ModifyVtlProtectionMask(
                gpns=gpns, map_flags=map_flags, target_vtl=target_vtl, rep_start=rep_start
            ),
        )

    @rule(vp=_VPS, msr=_MSRS, value=_VALUES64)
    def wrmsr(self, vp: int, msr: int, value: int) -> None:
        """WRMSR of every modelled MSR and random ones."""
        self._attack(vp, Wrmsr(msr=msr, value=value))

    @rule(vp=_VPS, msr=_MSRS)
    def rdmsr(self, vp: int, msr: int) -> None:
        """RDMSR of every modelled MSR and random ones."""
        self._attack(vp, Rdmsr(msr=msr))

    @rule(
        vp=_VPS,
        action=st.one_of(
            ACTION_STRATEGIES[MovToCr], st.builds(MovToCr, cr=st.sampled_from((0, 4)), value=_CR_VALUES)
        ),
    )
    def mov_to_cr(self, vp: int, action: MovToCr) -> None:
        """MOV to CR0/CR4 with any value."""
        self._attack(vp, action)

    @rule(vp=_VPS, action=st.one_of(ACTION_STRATEGIES[Xsetbv], st.builds(Xsetbv, value=st.integers(0, 7))))
    def xsetbv(self, vp: int, action: Xsetbv) -> None:
        """XSETBV with any value."""
        self._attack(vp, action)

    @rule(vp=_VPS, action=ACTION_STRATEGIES[LoadTableRegister])
    def load_table_register(self, vp: int, action: LoadTableRegister) -> None:
        """LGDT/LIDT/LLDT/LTR with any value."""
        self._attack(vp, action)

    @rule(vp=_VPS, data=st.data(), kind=st.sampled_from(AccessKind))
    def memory_access(self, vp: int, data: st.DataObject, kind: AccessKind) -> None:
        """A read, write or execute of a protected page, a random RAM page or any address."""
        protected = st.builds(
            lambda gpn, offset: gpn << 12 | offset, st.sampled_from(self.protected), uint(12)
        )
        gpa = data.draw(st.one_of(protected, st.integers(0, RAM_PAGES << 12), u64()))
        self._attack(vp, MemoryAccess(gpa=gpa, kind=kind))

    @rule(vp=_VPS, action=ACTION_STRATEGIES[WriteVtlControl])
    def write_vtl_control(self, vp: int, action: WriteVtlControl) -> None:
        """VTL0 writes its own VP-assist VTL control block."""
        self._attack(vp, action)

    @rule(vp=_VPS, action=ACTION_STRATEGIES[Hypercall])
    def raw_hypercall(self, vp: int, action: Hypercall) -> None:
        """A raw hypercall by any code."""
        self._attack(vp, action)

    # ---- invariants -----------------------------------------------------------------------------------

    @invariant()
    def vtl0_register_files_hold_no_secret(self) -> None:
        """VTL0's private registers and SINT0 slot, on every VP, hold no VTL1 secret."""
        if self.core is None:
            return
        for actor in self.core.actors:
            index = actor.state.index
            if actor.state.failure:
                # The partition ended (DOMAIN 7.2): inspections raise, so read the files directly.
                event("partition ended by a VTL0 action")
                actor.state.commit_all()
                registers = {n: actor.state.read(Vtl.VTL0, n) for n in PRIVATE_NAMES}
                observed = (registers, actor.state.vtls[Vtl.VTL0].sint0_message)
                shared = {n: actor.state.read(Vtl.VTL0, n) for n in SHARED}
            else:
                observed = (actor.registers(Vtl.VTL0, PRIVATE_NAMES), actor.sint0_message(Vtl.VTL0))
                shared = actor.registers(Vtl.VTL0, SHARED)
            leaks = _leaks(observed, self.secrets)
            assert not leaks, f"vp {index} VTL0 private registers hold VTL1 secrets {leaks}"
            # Shared registers are shared by design (excluded above); this VTL1 never puts a
            # secret there, so none may appear (a fast return must not load RAX/RCX).
            leaks = _leaks(shared, self.secrets)
            assert not leaks, f"vp {index} shared registers hold VTL1 secrets {leaks}"
            check_vp_invariants(actor.state)


NoninterferenceMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class TestNoninterference(NoninterferenceMachine.TestCase):  # type: ignore[misc,valid-type]
    """B2: a VTL0 attacker never observes a VTL1 secret nor changes VTL1's state."""
