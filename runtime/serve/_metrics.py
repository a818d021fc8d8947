"""Prometheus metrics of one control-plane app (its own registry) and the dashboard's figures.

Two sources. What the app itself does (actions it executed by type and outcome, their
latency histograms, connections, event subscribers, requests in flight) is counted as it
happens, with plain integers and a fixed-bucket histogram: one ``bisect`` per action, no lock
(everything runs on one event loop). What the runtime does (guest actions of every VP, commits,
modelled TDCALLs, VTL switches, mailbox depths, partitions by state) is read from the
runtime's counters when ``/metrics`` is scraped, so actions driven in-process count too.
Secure intercepts and failures have no counter in the runtime: the app listens to the
runtime's events for them (without commit events), from the moment it is created.
"""

from __future__ import annotations

import bisect
import time
from typing import TYPE_CHECKING, Any, Final

import msgspec
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from .._events import FailureEvent, InterceptEvent
from ._errors import error_type

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from prometheus_client.metrics_core import Metric

    from .._events import EngineEvent
    from .._host import Partition, Runtime

__all__ = ("BUCKETS_S", "LatencyHistogram", "Metrics", "Totals", "partition_state")

#: Upper bounds of the latency buckets, in seconds (5 us .. 10 s; +Inf is implicit).
BUCKETS_S: Final = (
    5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3,
    1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip
_BOUNDS_NS: Final = tuple(round(b * 1e9) for b in BUCKETS_S)


class LatencyHistogram:
    """Counts per latency bucket (``BUCKETS_S`` plus +Inf) and the sum, in nanoseconds."""

    __slots__ = ("count", "counts", "sum_ns")

    def __init__(self) -> None:
        self.counts = [0] * (len(_BOUNDS_NS) + 1)
        self.count = 0
        self.sum_ns = 0

    def record(self, values: Sequence[int]) -> None:
        """Count each latency of ``values`` (nanoseconds)."""
        counts, bucket = self.counts, bisect.bisect_left
        for ns in values:
            counts[bucket(_BOUNDS_NS, ns)] += 1
        self.count += len(values)
        self.sum_ns += sum(values)

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus buckets: (upper bound, count of values <= it), +Inf last."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*map(repr, BUCKETS_S), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile in seconds, interpolated inside its bucket (as PromQL does)."""
        if not self.count:
            return None
        rank = q * self.count
        below = 0
        for i, count in enumerate(self.counts):
            if count and below + count >= rank:
                low = BUCKETS_S[i - 1] if i else 0.0
                high = BUCKETS_S[i] if i < len(BUCKETS_S) else BUCKETS_S[-1]
                return low + (high - low) * (rank - below) / count
            below += count
        return BUCKETS_S[-1]


class Totals(msgspec.Struct, frozen=True, kw_only=True):
    """The runtime's counters summed over every partition, read in one pass."""

    partitions: dict[str, int]
    vps: int
    vp_actions: int
    commits: int
    vmcs_reads: int
    vmcs_writes: int
    vtl_switches: int
    mailbox_depth: int
    mailbox_depth_max: int
    mailbox_high_water: int


def partition_state(partition: Partition) -> str:
    """``"failed"`` (a fatal condition ended it, DOMAIN 7.2), ``"stopped"`` or ``"running"``.

    A failed partition is stopped too (its mailboxes are closed): failure is checked first.
    """
    if partition.failure is not None:
        return "failed"
    if partition.stopped:
        return "stopped"
    return "running"


class Metrics:
    """The counters of one app and the Prometheus registry that exposes them."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.started = time.time()
        self.actions: dict[tuple[str, str], int] = {}
        self.latency: dict[str, LatencyHistogram] = {}
        self.intercepts = 0
        self.failures = 0
        self.connections = 0
        self.connections_refused = 0
        self.subscribers = 0
        self.subscribers_cut = 0
        self.events_dropped = 0
        self.requests_in_flight = 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def record(self, actions: Sequence[object], outcomes: Sequence[object], latencies: Sequence[int]) -> None:
        """Count the actions of one request: type, outcome (or error) type and latency of each.

        ``outcomes`` and ``latencies`` may be shorter than ``actions`` (a batch that stopped).
        """
        # A batch is mostly runs of one action type with one outcome type: count each run once.
        done = min(len(actions), len(outcomes), len(latencies))
        start = 0
        while start < done:
            kinds = (type(actions[start]), type(outcomes[start]))
            end = start + 1
            while end < done and (type(actions[end]), type(outcomes[end])) == kinds:
                end += 1
            self._count_run(actions[start], outcomes[start], latencies[start:end])
            start = end

    def _count_run(self, action: object, outcome: object, latencies: Sequence[int]) -> None:
        """Count ``len(latencies)`` actions of ``action``'s type with ``outcome``'s type."""
        name = type(action).__name__
        if isinstance(outcome, BaseException):
            key = (name, error_type(outcome) or "InternalError")
        else:
            key = (name, type(outcome).__name__)
        self.actions[key] = self.actions.get(key, 0) + len(latencies)
        histogram = self.latency.get(name)
        if histogram is None:
            histogram = self.latency[name] = LatencyHistogram()
        histogram.record(latencies)

    def on_event(self, event: EngineEvent) -> None:
        """The runtime listener (attached without commit events)."""
        kind = type(event)
        if kind is InterceptEvent:
            self.intercepts += 1
        elif kind is FailureEvent:
            self.failures += 1

    def totals(self) -> Totals:
        """Sum the runtime's counters (one pass over every partition and VP)."""
        states = {"running": 0, "failed": 0, "stopped": 0}
        vps = actions = commits = reads = writes = switches = depth = depth_max = high_water = 0
        for partition in self.runtime.partitions:
            states[partition_state(partition)] += 1
            stats = partition.statistics()
            vps += len(stats.vps)
            depth += stats.mailbox_depth
            depth_max = max(depth_max, stats.mailbox_depth)
            high_water = max(high_water, stats.mailbox_high_water)
            for vp in stats.vps:
                actions += vp.actions
                commits += vp.commits
                reads += vp.vmcs_reads
                writes += vp.vmcs_writes
                switches += vp.vtl_switches
        return Totals(
            partitions=states,
            vps=vps,
            vp_actions=actions,
            commits=commits,
            vmcs_reads=reads,
            vmcs_writes=writes,
            vtl_switches=switches,
            mailbox_depth=depth,
            mailbox_depth_max=depth_max,
            mailbox_high_water=high_water,
        )

    def exposition(self) -> bytes:
        """The Prometheus text exposition of this app's registry."""
        return generate_latest(self.registry)

    def by_action(self) -> list[dict[str, Any]]:
        """Per action type: count, outcomes and latency percentiles (for the dashboard)."""
        rows = []
        for action, histogram in sorted(self.latency.items()):
            outcomes = {o: n for (a, o), n in self.actions.items() if a == action}
            rows.append(
                {
                    "action": action,
                    "count": histogram.count,
                    "outcomes": outcomes,
                    "p50_us": _us(histogram.quantile(0.5)),
                    "p90_us": _us(histogram.quantile(0.9)),
                    "p99_us": _us(histogram.quantile(0.99)),
                }
            )
        return rows


def _us(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e6, 1)


class _Collector:
    """Builds the metric families at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        t = m.totals()
        actions = CounterMetricFamily(
            "tdvsm_actions", "Guest actions executed through this app", labels=["action", "outcome"]
        )
        for (action, outcome), count in sorted(m.actions.items()):
            actions.add_metric([action, outcome], count)
        yield actions
        latency = HistogramMetricFamily(
            "tdvsm_action_latency_seconds",
            "Latency of guest actions executed through this app (server side)",
            labels=["action"],
        )
        for action, histogram in sorted(m.latency.items()):
            latency.add_metric([action], histogram.cumulative(), histogram.sum_ns / 1e9)
        yield latency
        counters = (
            ("tdvsm_vp_actions", "Guest actions run by every VP of the runtime", t.vp_actions),
            ("tdvsm_commits", "Commits of staged register updates", t.commits),
            ("tdvsm_vmcs_reads", "Modelled TDG.VP.RD calls (DOMAIN 7.1)", t.vmcs_reads),
            ("tdvsm_vmcs_writes", "Modelled TDG.VP.WR calls (DOMAIN 7.1)", t.vmcs_writes),
            ("tdvsm_vtl_switches", "VTL calls and returns", t.vtl_switches),
            ("tdvsm_intercepts", "Secure intercepts delivered to VTL1 since the app started", m.intercepts),
            ("tdvsm_failures", "Partitions ended by a fatal condition since the app started", m.failures),
            (
                "tdvsm_connections_refused",
                "Connections refused at the connection limit",
                m.connections_refused,
            ),
            ("tdvsm_event_subscribers_cut", "Event subscribers cut for falling behind", m.subscribers_cut),
            (
                "tdvsm_events_dropped",
                "Events not delivered to subscribers that fell behind",
                m.events_dropped,
            ),
        )
        for name, doc, value in counters:
            yield CounterMetricFamily(name, doc, value=value)
        partitions = GaugeMetricFamily("tdvsm_partitions", "Partitions by state", labels=["state"])
        for state, count in t.partitions.items():
            partitions.add_metric([state], count)
        yield partitions
        gauges = (
            ("tdvsm_vps", "VPs of every partition", t.vps),
            ("tdvsm_mailbox_depth", "Messages waiting in VP mailboxes", t.mailbox_depth),
            ("tdvsm_mailbox_depth_max", "Messages waiting in the fullest partition", t.mailbox_depth_max),
            ("tdvsm_mailbox_high_water", "Deepest any VP mailbox has been", t.mailbox_high_water),
            ("tdvsm_connections", "Open connections (when served by tdvsm serve)", m.connections),
            ("tdvsm_event_subscribers", "Event-stream subscribers", m.subscribers),
            ("tdvsm_http_requests_in_flight", "HTTP requests being handled", m.requests_in_flight),
        )
        for name, doc, value in gauges:
            yield GaugeMetricFamily(name, doc, value=value)
