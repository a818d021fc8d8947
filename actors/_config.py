"""Partition configuration: what a user chooses when creating a partition."""

from __future__ import annotations

from typing import Literal, TypeAlias

import msgspec

from protocol._x86 import DEFAULT_VMX_CR4_FIXED1

__all__ = ("CommitPolicy", "PartitionConfig")

CommitPolicy: TypeAlias = Literal["batched", "eager"]

MAX_VP_COUNT = 1024


class PartitionConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The fixed facts of one simulated TDX partition (API.md ``create_partition`` keywords).

    ``mmio_gpns`` holds inclusive (first, last) GPN ranges that are not RAM. Build one from
    user input with ``PartitionConfig.from_keywords``, which checks types as well as ranges.
    ``batch_max_updates`` closes a batch window after that many staged register updates of
    one (VP, VTL); ``batch_window`` closes it after that many seconds of the runtime's clock.
    ``physical_address_bits`` is the guest physical-address width VM entry checks CR3 against
    (DOMAIN 7.2 check 8; TDX GPAW 52 by default).
    """

    vp_count: int = 1
    vsm_available: bool = True
    access_vsm: bool = True
    tsc_aux: bool = True
    dr6_shared: bool = False
    ram_pages: int = 1 << 18
    mmio_gpns: tuple[tuple[int, int], ...] = ()
    commit_policy: CommitPolicy = "batched"
    vmx_cr4_fixed1: int = DEFAULT_VMX_CR4_FIXED1
    xss_supported: int = 0x1C00
    batch_max_updates: int = 64
    batch_window: float = 0.001
    physical_address_bits: int = 52

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ValueError:
            return ValueError(f"PartitionConfig.{field}: {why}")

        if not 1 <= self.vp_count <= MAX_VP_COUNT:
            raise bad("vp_count", f"must be an int in 1..{MAX_VP_COUNT}, got {self.vp_count!r}")
        if not 1 <= self.ram_pages < (1 << 40):
            raise bad("ram_pages", f"must be an int in 1..2**40-1, got {self.ram_pages!r}")
        for first, last in self.mmio_gpns:
            if not 0 <= first <= last < (1 << 52):
                raise bad("mmio_gpns", f"bad GPN range ({first:#x}, {last:#x})")
        if self.commit_policy not in ("batched", "eager"):
            raise bad("commit_policy", f"must be 'batched' or 'eager', got {self.commit_policy!r}")
        if self.batch_max_updates < 1:
            raise bad("batch_max_updates", f"must be a positive int, got {self.batch_max_updates!r}")
        if not self.batch_window > 0:
            raise bad("batch_window", f"must be > 0 seconds, got {self.batch_window!r}")
        if not 32 <= self.physical_address_bits <= 52:
            raise bad(
                "physical_address_bits", f"must be an int in 32..52, got {self.physical_address_bits!r}"
            )

    @classmethod
    def from_keywords(cls, **config: object) -> PartitionConfig:
        """Build a config from user keywords, checking every type and range.

        Raises:
            ValueError: a bad or unknown field; the message names it.
        """
        try:
            return msgspec.convert(config, cls)
        except msgspec.ValidationError as exc:
            raise ValueError(f"PartitionConfig: {exc}") from None

    def is_ram(self, gpn: int) -> bool:
        """True when ``gpn`` is guest RAM (inside ``ram_pages`` and not in an MMIO range)."""
        if gpn >= self.ram_pages:
            return False
        return not any(first <= gpn <= last for first, last in self.mmio_gpns)
