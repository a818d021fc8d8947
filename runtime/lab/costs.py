"""The cost model of virtual time: what each modelled TDX/OpenHCL operation costs, in cycles.

Defaults and the evidence behind each are in the README, section "Cost model" (codes E1-E14,
N1-N3), each with its status:
**sourced** (a direct measurement), **proxy** (a measurement of an analogous operation or
stack) or **illustrative** (no public measurement; derived by reasoning). Most are
illustrative: no TDX partitioning, VTL switch or TDG.VP.WR latency has been published. A run
report repeats every parameter with its status, so nobody mistakes a virtual latency for a
measurement. Any parameter can be overridden from a TOML or JSON file (``load_cost_model``);
overridden values are reported with status ``user``.

How an action is charged (``CostModel.charge``), from what the action did (its kind, its
outcome, and the deltas of its VP's counters across the action):

* an action that hit a secure intercept: ``secure_intercept_delivery`` (build the SynIC
  message, switch to VTL1; it includes the L2 exit);
* an action that switched VTL (VtlCall, VtlReturn): ``vtl_switch`` per switch (an L2 exit
  and re-entry, the dispatch, and the VTL2 user-mode round trip of OpenHCL's dispatcher);
* any other hypercall: ``l2_exit_to_l1_and_reenter + hypercall_dispatch +
  hypercall_user_mode`` (OpenHCL dispatches the VSM hypercalls in VTL2 user mode, COSTS N1);
* any other exiting instruction (RDMSR, WRMSR, MOV to CR, XSETBV, LGDT ...), including one
  whose intercept message was dropped: ``l2_exit_to_l1_and_reenter + l1_user_mode_roundtrip``;
* a plain memory access, a write to the guest's own VP assist page or SIMP slot: no exit, 0;
* plus ``tdcall_vp_rd`` for every modelled TDG.VP.RD and ``tdcall_vp_wr`` for every TDG.VP.WR
  the VP issued during the action (DOMAIN 7.1: OpenHCL's pattern path by path under the eager
  policy, the write-back commit under batched), and ``commit_fixed`` per commit.

A batched commit is charged to the action during which the scheduler performed it: usually the
first action after a VTL entry. Not modelled: the +300-cycle surcharge after a
VM-execution-control write (the counters do not say which field was written), and the time
VTL1 or VTL0 software spends between exits.
"""

from __future__ import annotations

import enum
import json
import tomllib
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec

__all__ = (
    "PARAMETERS",
    "ActionKind",
    "CostModel",
    "CostModelError",
    "CostParameter",
    "action_kind",
    "load_cost_model",
)

Cycles = Annotated[int, msgspec.Meta(ge=0, le=10**12)]
Status = Literal["sourced", "proxy", "illustrative", "user"]


class CostModel(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Cycle costs of the modelled operations (README "Cost model") and the clock rate.

    ``ghz`` converts cycles to nanoseconds (a nominal 2.5 GHz by default).
    """

    ghz: Annotated[float, msgspec.Meta(gt=0, le=10)] = 2.5
    vm_exit_entry: Cycles = 1_200
    td_exit_entry: Cycles = 3_400
    l2_exit_to_l1_and_reenter: Cycles = 4_000
    tdcall_vp_rd: Cycles = 1_200
    tdcall_vp_wr: Cycles = 1_200
    control_field_surcharge: Cycles = 300
    hypercall_dispatch: Cycles = 500
    hypercall_user_mode: Cycles = 4_000
    vtl_switch: Cycles = 8_500
    secure_intercept_delivery: Cycles = 9_000
    commit_overhead: Cycles = 1_200
    commit_fixed: Cycles = 0
    l1_user_mode_roundtrip: Cycles = 4_000
    tdx_module_local_exit: Cycles = 1_750
    nested_vmcs_field_sync: Cycles = 200

    def ns(self, cycles: int) -> int:
        """``cycles`` in whole nanoseconds at ``ghz`` (rounded, so integer arithmetic stays exact)."""
        return round(cycles / self.ghz)

    def charge(
        self, kind: ActionKind, outcome: str, switches: int, commits: int, vmcs_reads: int, vmcs_writes: int
    ) -> int:
        """Cycles of one action: what it did, from its kind, outcome and counter deltas."""
        if outcome == "Intercepted":
            cycles = self.secure_intercept_delivery
        elif switches > 0:
            cycles = self.vtl_switch * switches
        elif kind is ActionKind.HYPERCALL:
            cycles = self.l2_exit_to_l1_and_reenter + self.hypercall_dispatch + self.hypercall_user_mode
        elif kind is ActionKind.INSTRUCTION:
            cycles = self.l2_exit_to_l1_and_reenter + self.l1_user_mode_roundtrip
        else:
            cycles = 0
        return cycles + self.tdcalls(vmcs_reads, vmcs_writes) + commits * self.commit_fixed

    def tdcalls(self, vmcs_reads: int, vmcs_writes: int) -> int:
        """Cycles of ``vmcs_reads`` TDG.VP.RD and ``vmcs_writes`` TDG.VP.WR."""
        return vmcs_reads * self.tdcall_vp_rd + vmcs_writes * self.tdcall_vp_wr


class CostParameter(msgspec.Struct, frozen=True, kw_only=True):
    """One parameter as a report shows it: value, status and where the default comes from."""

    name: str
    value: float
    unit: str
    status: Status
    used: bool
    basis: str


#: (status, used by ``charge``, basis) of each parameter; README "Cost model" has the evidence codes.
PARAMETERS: Final[dict[str, tuple[Status, bool, str]]] = {
    "ghz": ("illustrative", True, "nominal clock rate the defaults are converted with"),
    "vm_exit_entry": ("sourced", False, "KVM VMCALL round trip 1,181-1,195 cycles (E1, E2, E5, E7)"),
    "td_exit_entry": ("illustrative", False, "2.83 x vm_exit_entry, the SNP/plain ratio of E13"),
    "l2_exit_to_l1_and_reenter": (
        "illustrative",
        True,
        "2 x vm_exit_entry + 1,600 TDX-module cycles (N3, E6)",
    ),
    "tdcall_vp_rd": ("illustrative", True, "one TDCALL = one exit/entry pair into SEAM (N3); per TDG.VP.RD"),
    "tdcall_vp_wr": ("illustrative", True, "one TDCALL = one exit/entry pair into SEAM (N3); per TDG.VP.WR"),
    "control_field_surcharge": ("proxy", False, "VMX consistency checks after a control write (E9)"),
    "hypercall_dispatch": ("illustrative", True, "no source isolates dispatch work (E1 bounds it)"),
    "hypercall_user_mode": ("proxy", True, "VTL2 user-mode dispatch: KVM user-mode exit extra cost E4'"),
    "vtl_switch": ("illustrative", True, "l2_exit_to_l1_and_reenter + dispatch + user-mode round trip"),
    "secure_intercept_delivery": ("illustrative", True, "vtl_switch + 500 to build the SynIC message"),
    "commit_overhead": (
        "illustrative",
        False,
        "per dirty VMCS field, = tdcall_vp_wr: not charged, every TDG.VP.WR is (DOMAIN 7.1)",
    ),
    "commit_fixed": ("illustrative", True, "0: a per-transaction constant has no source"),
    "l1_user_mode_roundtrip": ("proxy", True, "mshv_vtl kernel -> OpenVMM user -> kernel, E4'"),
    "tdx_module_local_exit": ("proxy", False, "SNP in-guest #VC CPUID path (E14)"),
    "nested_vmcs_field_sync": ("proxy", False, "KVM nVMX rarely-used field sync (E8)"),
}


class CostModelError(ValueError):
    """Raised when a cost-model file cannot be read or does not describe a ``CostModel``."""


class ActionKind(enum.Enum):
    """How the cost model sees a guest action."""

    HYPERCALL = "hypercall"
    INSTRUCTION = "instruction"
    NO_EXIT = "no-exit"


_HYPERCALLS: Final = frozenset(
    {
        "EnablePartitionVtl",
        "EnableVpVtl",
        "StartVirtualProcessor",
        "GetVpRegisters",
        "SetVpRegisters",
        "ModifyVtlProtectionMask",
        "VtlCall",
        "VtlReturn",
        "Hypercall",
    }
)
_NO_EXIT: Final = frozenset({"WriteVtlControl", "MemoryAccess", "ClearMessageSlot"})


def action_kind(name: str) -> ActionKind:
    """The kind of the action class called ``name``."""
    if name in _HYPERCALLS:
        return ActionKind.HYPERCALL
    if name in _NO_EXIT:
        return ActionKind.NO_EXIT
    return ActionKind.INSTRUCTION


def load_cost_model(path: str | Path) -> tuple[CostModel, frozenset[str]]:
    """Read overrides from a TOML or JSON file of ``name = value`` pairs.

    Returns the model and the names the file set.

    Raises:
        CostModelError: the file is missing, unreadable, not TOML/JSON, or names an unknown
            parameter or a bad value (the message says which, in one line).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        msg = f"cannot read cost file {path}: {exc.strerror or exc}"
        raise CostModelError(msg) from exc
    try:
        raw = json.loads(data) if path.suffix.lower() == ".json" else tomllib.loads(data.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        msg = f"cost file {path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {exc}"
        raise CostModelError(msg) from exc
    if not isinstance(raw, dict):
        msg = f"cost file {path}: expected a table of parameter = value, got {type(raw).__name__}"
        raise CostModelError(msg)
    try:
        model = msgspec.convert(raw, CostModel)
    except msgspec.ValidationError as exc:
        msg = f"cost file {path}: {exc}"
        raise CostModelError(msg) from exc
    return model, frozenset(raw)


def describe(model: CostModel, overridden: frozenset[str] = frozenset()) -> list[CostParameter]:
    """Every parameter of ``model`` with its status (``user`` where a file set it)."""
    rows = []
    for name, (status, used, basis) in PARAMETERS.items():
        rows.append(
            CostParameter(
                name=name,
                value=getattr(model, name),
                unit="GHz" if name == "ghz" else "cycles",
                status="user" if name in overridden else status,
                used=used,
                basis=basis,
            )
        )
    return rows
