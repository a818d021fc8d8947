"""``tdvsm run --backend ray``: the experiments of one command, run on a Ray cluster.

The ``tdvsm`` dispatcher hands ``run_on_ray`` to ``lab.commands`` (``lab`` may not import this
room). Options that cannot work become ``UsageError`` lines before anything starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from ..lab.cells import Cells
from ..lab.usage import UsageError
from .coordinator import ClusterError, cluster_cpus, connect, run_sharded
from .safety import UnsafeCluster

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..lab.cells import ClusterReport
    from ..lab.costs import CostModel
    from ..lab.records import ExperimentOptions, Progress, RunData

__all__ = ("run_on_ray",)


def run_on_ray(
    options: list[ExperimentOptions],
    costs: CostModel,
    progress: Callable[[ExperimentOptions], Progress],
    *,
    address: str | None,
    shards: int | None,
) -> tuple[list[RunData], ClusterReport]:
    """Run each of ``options`` sharded over ``shards`` Ray actors (default: one per CPU).

    Raises:
        UsageError: an unsafe or unreachable cluster, or more shards than cells.
    """
    cells = min(Cells(o.partitions, o.vps, o.drivers).count for o in options)
    if shards is not None and shards > cells:
        msg = (
            f"--shards {shards}: this experiment splits into {cells} independent cells "
            "(one per driver, or per partition when there are more drivers than partitions)"
        )
        raise UsageError(msg)
    try:
        with connect(address) as cluster:
            count = shards if shards is not None else max(1, min(cluster_cpus(), cells))
            runs = [run_sharded(opts, costs, count, progress(opts)) for opts in options]
            return runs, msgspec.structs.replace(cluster, shards=count)
    except (UnsafeCluster, ClusterError) as exc:
        raise UsageError(str(exc)) from None
