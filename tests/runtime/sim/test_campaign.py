"""The CI campaign (RELIABILITY A1, A2, A4, A6): 200 seeds, every check, every fault, replayed."""

from __future__ import annotations

import random
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

from runtime.sim import FAULT_TYPES, SOMETIMES, run_campaign, run_seed
from runtime.sim.commands import render_campaign

#: The per-PR budget: about 3 minutes on the 2-core CI machine with two worker processes.
SEEDS = 200
STEPS = 20_000


def _trace(seed: int) -> str:
    return run_seed(seed, STEPS).trace


@pytest.mark.timeout(900)
def test_the_ci_campaign_passes_fires_every_fault_and_covers_every_sometimes(summary_section: Any) -> None:
    """Every seed passes; each fault fires in >= 90% of the seeds that turn it on; each sometimes-
    assertion is hit; 20 passing seeds, replayed twice more, give the same trace hash (A2)."""
    started = time.perf_counter()
    report = run_campaign(range(SEEDS), STEPS, jobs=2)
    summary = render_campaign(report, time.perf_counter() - started)
    summary_section("tdvsm sim: the CI campaign", summary)  # in CI's output, pass or fail
    assert report.seeds == SEEDS
    assert report.failed == [], summary
    for fault in FAULT_TYPES:
        assert report.fault_enabled[fault] > 0
        assert report.fault_fired[fault] >= 0.9 * report.fault_enabled[fault], summary
    for name in SOMETIMES:
        assert report.sometimes_seeds[name] > 0, summary
    chosen = random.Random(SEEDS).sample(range(SEEDS), 20)
    with ProcessPoolExecutor(max_workers=2) as pool:
        first = list(pool.map(_trace, chosen))
        second = list(pool.map(_trace, chosen))
    assert first == second
    assert first == [_trace(chosen[0]), *first[1:]]
