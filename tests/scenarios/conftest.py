"""Every scenario runs under both commit policies: the policy must never change an outcome."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests import guest

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(params=["batched", "eager"], autouse=True)
def commit_policy(request: pytest.FixtureRequest) -> Iterator[str]:
    """The policy of partitions made by ``new_partition`` (a module may parametrize its own)."""
    policy: str = request.param
    guest.default_commit_policy = policy
    yield policy
    guest.default_commit_policy = "batched"
