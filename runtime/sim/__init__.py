"""Deterministic simulation with fault injection (``tdvsm sim``; RELIABILITY A1-A7, C1-C3).

``world.run_seed(seed, steps)`` runs one seed: seeded guest programs on a few partitions,
trio's scheduler seeded and deterministic on a virtual clock, a swarm fault plan (``faults``),
invariant, transition and linearizability checks (``checks``, ``linearizability``), and a
trace hash that is the same on every replay. ``campaign.run_campaign`` runs many seeds across
worker processes and sums up what fired and what was covered.
"""

from __future__ import annotations

from .campaign import CampaignReport, run_campaign
from .faults import FAULT_TYPES, FaultPlan, draw_plan
from .history import SOMETIMES
from .linearizability import Op, check_register
from .seed import run_seed
from .world import SeedResult

__all__ = (
    "FAULT_TYPES",
    "SOMETIMES",
    "CampaignReport",
    "FaultPlan",
    "Op",
    "SeedResult",
    "check_register",
    "draw_plan",
    "run_campaign",
    "run_seed",
)
