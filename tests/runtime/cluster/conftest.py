"""One local Ray (2 CPUs) shared by every Ray test of the session: it takes seconds to start.

Without the ``ray`` extra the Ray tests are skipped, unless ``TDVSM_REQUIRE_RAY=1`` (CI sets
it), which makes a missing Ray an error instead.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator


def require_ray() -> None:
    """Skip the calling test when Ray is missing, or fail when the run requires Ray."""
    if os.environ.get("TDVSM_REQUIRE_RAY") == "1":
        import ray  # noqa: F401  # an ImportError here fails the test: CI must run the Ray tests
    else:
        pytest.importorskip("ray")


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """A local Ray with 2 CPUs, started once and shut down at the end of the session."""
    require_ray()
    from runtime.cluster.coordinator import connect

    with connect(None, num_cpus=2):
        yield
