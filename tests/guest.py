"""Helpers for tests: initial contexts and a runtime with invariant checks on."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from runtime import Partition, Runtime, open_runtime
from runtime.testing import CODE64, DATA64, TSS64, long_mode_context

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ("CODE64", "DATA64", "TSS64", "checked_runtime", "long_mode_context", "new_partition")


@asynccontextmanager
async def checked_runtime(**options: object) -> AsyncIterator[Runtime]:
    """``open_runtime`` with every invariant checked after every step."""
    async with open_runtime(seed=1, check_invariants=True, **options) as rt:  # type: ignore[arg-type]
        yield rt


#: Commit policy of partitions whose test does not choose one (tests/scenarios/conftest.py
#: runs every scenario under both).
default_commit_policy = "batched"


async def new_partition(rt: Runtime, **config: object) -> Partition:
    """A 4-VP partition with the default commit policy unless told otherwise."""
    config.setdefault("vp_count", 4)
    config.setdefault("commit_policy", default_commit_policy)
    return await rt.create_partition(**config)
