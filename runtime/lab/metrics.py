"""Measurements of one experiment phase: HDR latency histograms, outcome counts, a timeline.

Latencies are integer nanoseconds (wall-clock or virtual) recorded in HDR histograms
(``hdrhistogram``: 3 significant digits from 1 ns to one hour). Histograms are mergeable: a
report carries each one encoded (``HdrHistogram.encode``, base64 text), so shards of an
experiment run elsewhere can be combined with ``merge_encoded``.

A ``PhaseRecorder`` is written by the load drivers of one phase (all on one event loop, so
without locks) and summarised once at the end. The timeline counts completed actions per
time bucket; it starts with fine buckets and doubles their width whenever the phase outgrows
``TIMELINE_BUCKETS`` of them, so it stays small and is the same for the same sequence of times.

A recorder travels as a ``RecorderState`` (msgspec; histograms HDR-encoded), and
``merge_recorders`` combines the states of recorders that measured disjoint parts of one phase
into the recorder that would have measured it all.
"""

from __future__ import annotations

from typing import Final

import msgspec
from hdrh.histogram import HdrHistogram

__all__ = (
    "HIGHEST_NS",
    "TIMELINE_BUCKETS",
    "LatencyStats",
    "PhaseRecorder",
    "RecorderState",
    "Timeline",
    "latency_stats",
    "mean_and_deviation",
    "merge_encoded",
    "merge_recorders",
    "new_histogram",
    "recorded",
)

#: Largest latency a histogram holds (one hour); larger values are clamped to it.
HIGHEST_NS: Final = 3_600 * 10**9
_SIGNIFICANT_DIGITS: Final = 3
#: Most buckets a timeline keeps before it coarsens.
TIMELINE_BUCKETS: Final = 200
#: Percentiles a report lists, with their field names.
PERCENTILES: Final = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))


def new_histogram() -> HdrHistogram:
    """An empty latency histogram (ns)."""
    return HdrHistogram(1, HIGHEST_NS, _SIGNIFICANT_DIGITS)


class LatencyStats(msgspec.Struct, frozen=True, kw_only=True):
    """Latency percentiles in nanoseconds (HDR precision: 3 significant digits)."""

    count: int
    mean: int
    p50: int
    p90: int
    p99: int
    p999: int
    max: int


def _nonzero(histogram: HdrHistogram) -> list[tuple[int, int]]:
    """(lowest value, count) of every non-empty bucket, in value order (one pass over the counts)."""
    counts = histogram.counts
    value_of = histogram.get_value_from_index
    return [(value_of(i), counts[i]) for i in range(histogram.counts_len) if counts[i]]


def recorded(histogram: HdrHistogram) -> list[tuple[int, int]]:
    """(value, count) of every non-empty bucket in value order; the value is the bucket's highest.

    hdrh's own iterators and percentile queries walk the whole counts array per call in pure
    Python (~10 ms each); one pass here serves every percentile.
    """
    highest = histogram.get_highest_equivalent_value
    return [(highest(value), count) for value, count in _nonzero(histogram)]


def mean_and_deviation(histogram: HdrHistogram) -> tuple[float, float]:
    """HdrHistogram's mean and standard deviation (each bucket weighed at its middle), in one pass."""
    count = histogram.get_total_count()
    if not count:
        return 0.0, 0.0
    median = histogram._hdr_median_equiv_value
    middles = [(median(value), n) for value, n in _nonzero(histogram)]
    mean = sum(middle * n for middle, n in middles) / count
    variance = sum((middle - mean) ** 2 * n for middle, n in middles) / count
    return mean, variance**0.5


def latency_stats(histogram: HdrHistogram) -> LatencyStats:
    """Summarise ``histogram`` with HdrHistogram's semantics.

    A percentile is the highest equivalent value of the first bucket whose cumulative count
    reaches ``round(p/100 * count)`` (at least 1); the mean weighs each bucket by its middle.
    """
    count = histogram.get_total_count()
    if not count:
        return LatencyStats(count=0, mean=0, p50=0, p90=0, p99=0, p999=0, max=0)
    buckets = _nonzero(histogram)
    highest = histogram.get_highest_equivalent_value
    median = histogram._hdr_median_equiv_value  # the public get_mean_value walks every bucket
    values: dict[str, int] = {}
    for name, p in PERCENTILES:
        target = max(int(p / 100 * count + 0.5), 1)
        seen = 0
        for value, n in buckets:
            seen += n
            if seen >= target:
                values[name] = highest(value)
                break
    total = sum(median(value) * n for value, n in buckets)
    return LatencyStats(count=count, mean=round(total / count), max=histogram.get_max_value(), **values)


def encode(histogram: HdrHistogram) -> str:
    """The histogram in HdrHistogram's compressed base64 form."""
    data: bytes = histogram.encode()
    return data.decode("ascii")


def merge_encoded(encoded: list[str]) -> HdrHistogram:
    """One histogram holding every value of the ``encoded`` ones (shards combine this way)."""
    merged = new_histogram()
    for text in encoded:
        merged.add(HdrHistogram.decode(text.encode("ascii")))
    return merged


class Timeline:
    """Counts of events per time bucket; coarsens itself to at most ``TIMELINE_BUCKETS``."""

    __slots__ = ("counts", "width")

    def __init__(self, width: int) -> None:
        self.width = width
        self.counts: list[int] = []

    def add(self, t: int) -> None:
        """Count one event at time ``t`` (ns since the phase started)."""
        i = t // self.width if t > 0 else 0
        counts = self.counts
        if i >= len(counts):
            while i >= TIMELINE_BUCKETS:
                self._coarsen()
                i = t // self.width
            counts = self.counts
            counts.extend([0] * (i + 1 - len(counts)))
        counts[i] += 1

    def _coarsen(self) -> None:
        counts = self.counts
        if len(counts) % 2:
            counts.append(0)
        self.counts = [counts[i] + counts[i + 1] for i in range(0, len(counts), 2)]
        self.width *= 2


class PhaseRecorder:
    """Everything the drivers of one phase measure.

    ``origin`` is the phase's start on the drivers' clock; recorded times are relative to it.
    Latencies are first counted in plain dicts (value -> count: one dict update per action,
    and virtual latencies take few distinct values) and moved into the HDR histograms when a
    dict grows large or when the histograms are read; the result is the same histogram.
    """

    __slots__ = (
        "_episode_counts",
        "_episodes",
        "_histograms",
        "_latency_counts",
        "action_work",
        "actions",
        "episode_work",
        "origin",
        "outcomes",
        "timeline",
        "unexpected",
        "unexpected_counts",
    )

    def __init__(self, origin: int, timeline_width: int) -> None:
        self.origin = origin
        self._histograms: dict[str, HdrHistogram] = {}
        self._episodes: dict[str, HdrHistogram] = {}
        self._latency_counts: dict[str, dict[int, int]] = {}
        self._episode_counts: dict[str, dict[int, int]] = {}
        self.outcomes: dict[tuple[str, str], int] = {}
        self.unexpected: dict[str, list[str]] = {}
        self.unexpected_counts: dict[str, int] = {}
        self.timeline = Timeline(timeline_width)
        self.actions = 0
        #: Action type / workload -> [commits, TDG.VP.RD, TDG.VP.WR] done during its actions.
        self.action_work: dict[str, list[int]] = {}
        self.episode_work: dict[str, list[int]] = {}

    def record(
        self,
        action: str,
        outcome: str,
        latency: int,
        end: int,
        commits: int = 0,
        reads: int = 0,
        writes: int = 0,
    ) -> None:
        """One action of type ``action`` ended at ``end`` after ``latency`` ns.

        ``commits``, ``reads`` and ``writes`` are the commits and the modelled TDG.VP.RD and
        TDG.VP.WR its VP did during it.
        """
        if commits or reads or writes:
            work = self.action_work.get(action)
            if work is None:
                work = self.action_work[action] = [0, 0, 0]
            work[0] += commits
            work[1] += reads
            work[2] += writes
        counts = self._latency_counts.get(action)
        if counts is None:
            counts = self._latency_counts[action] = {}
        counts[latency] = counts.get(latency, 0) + 1
        if len(counts) > _PENDING_LIMIT:
            _drain(counts, self._histograms, action)
        key = (action, outcome)
        outcomes = self.outcomes
        outcomes[key] = outcomes.get(key, 0) + 1
        # Timeline.add's common case, inlined (this runs once per action).
        timeline = self.timeline
        t = end - self.origin
        i = t // timeline.width if t > 0 else 0
        if i < len(timeline.counts):
            timeline.counts[i] += 1
        else:
            timeline.add(t)
        self.actions += 1

    def record_episode(
        self, workload: str, latency: int, commits: int = 0, reads: int = 0, writes: int = 0
    ) -> None:
        """One operation of ``workload`` took ``latency`` ns (from its intended start)."""
        if commits or reads or writes:
            work = self.episode_work.get(workload)
            if work is None:
                work = self.episode_work[workload] = [0, 0, 0]
            work[0] += commits
            work[1] += reads
            work[2] += writes
        counts = self._episode_counts.get(workload)
        if counts is None:
            counts = self._episode_counts[workload] = {}
        counts[latency] = counts.get(latency, 0) + 1
        if len(counts) > _PENDING_LIMIT:
            _drain(counts, self._episodes, workload)

    @property
    def histograms(self) -> dict[str, HdrHistogram]:
        """Action type -> latency histogram."""
        for name, counts in self._latency_counts.items():
            _drain(counts, self._histograms, name)
        return self._histograms

    @property
    def episodes(self) -> dict[str, HdrHistogram]:
        """Workload -> operation latency histogram."""
        for name, counts in self._episode_counts.items():
            _drain(counts, self._episodes, name)
        return self._episodes

    def note_unexpected(self, workload: str, what: str) -> None:
        """A workload saw an outcome its guest model did not expect.

        Counted; the three smallest distinct messages are kept, so the report does not depend
        on which driver hit one first.
        """
        self.unexpected_counts[workload] = self.unexpected_counts.get(workload, 0) + 1
        seen = self.unexpected.setdefault(workload, [])
        if what not in seen:
            seen.append(what)
            seen.sort()
            del seen[3:]

    @property
    def episode_count(self) -> int:
        """Operations completed."""
        return sum(h.get_total_count() for h in self.episodes.values())

    def state(self) -> RecorderState:
        """What this recorder measured, as data (``merge_recorders`` combines such states)."""
        return RecorderState(
            origin=self.origin,
            actions=self.actions,
            histograms={name: encode(h) for name, h in sorted(self.histograms.items())},
            episodes={name: encode(h) for name, h in sorted(self.episodes.items())},
            outcomes=sorted((a, o, n) for (a, o), n in self.outcomes.items()),
            unexpected={name: list(seen) for name, seen in sorted(self.unexpected.items())},
            unexpected_counts=dict(sorted(self.unexpected_counts.items())),
            timeline_width=self.timeline.width,
            timeline=list(self.timeline.counts),
            action_work={name: list(work) for name, work in sorted(self.action_work.items())},
            episode_work={name: list(work) for name, work in sorted(self.episode_work.items())},
        )


#: Distinct latencies counted per action type before they are moved into the histogram.
_PENDING_LIMIT: Final = 4_096


def _drain(counts: dict[int, int], histograms: dict[str, HdrHistogram], name: str) -> None:
    histogram = histograms.get(name)
    if histogram is None:
        histogram = histograms[name] = new_histogram()
    record = histogram.record_value
    for value, count in counts.items():
        record(value if value < HIGHEST_NS else HIGHEST_NS, count)
    counts.clear()


class RecorderState(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything a ``PhaseRecorder`` measured, as plain data (``PhaseRecorder.state``)."""

    origin: int
    actions: int
    histograms: dict[str, str]
    episodes: dict[str, str]
    outcomes: list[tuple[str, str, int]]
    unexpected: dict[str, list[str]]
    unexpected_counts: dict[str, int]
    timeline_width: int
    timeline: list[int]
    action_work: dict[str, list[int]]
    episode_work: dict[str, list[int]]


def _coarsened(width: int, counts: list[int], target: int) -> list[int]:
    """``counts`` of buckets ``width`` wide, re-bucketed ``target`` (a power-of-two multiple) wide."""
    while width < target:
        if len(counts) % 2:
            counts = [*counts, 0]
        counts = [counts[i] + counts[i + 1] for i in range(0, len(counts), 2)]
        width *= 2
    return counts


def merge_recorders(states: list[RecorderState], origin: int) -> PhaseRecorder:
    """The recorder of a phase whose disjoint parts were measured into ``states``.

    What a single recorder would have measured: histograms merged, counts added, the three
    smallest distinct unexpected messages kept, and timelines brought to the widest one's
    buckets (a timeline's width depends only on its latest event, so the widest is the one a
    single recorder would have reached) and added.
    """
    width = max((s.timeline_width for s in states), default=1)
    merged = PhaseRecorder(origin, width)
    for name in sorted({name for s in states for name in s.histograms}):
        merged.histograms[name] = merge_encoded([s.histograms[name] for s in states if name in s.histograms])
    for name in sorted({name for s in states for name in s.episodes}):
        merged.episodes[name] = merge_encoded([s.episodes[name] for s in states if name in s.episodes])
    for state in states:
        merged.actions += state.actions
        for action, outcome, count in state.outcomes:
            merged.outcomes[action, outcome] = merged.outcomes.get((action, outcome), 0) + count
        for name, count in state.unexpected_counts.items():
            merged.unexpected_counts[name] = merged.unexpected_counts.get(name, 0) + count
        for name, seen in state.unexpected.items():
            merged.unexpected[name] = sorted({*merged.unexpected.get(name, []), *seen})[:3]
        for mine, theirs in (
            (merged.action_work, state.action_work),
            (merged.episode_work, state.episode_work),
        ):
            for name, work in theirs.items():
                total = mine.setdefault(name, [0] * len(work))
                for i, n in enumerate(work):
                    total[i] += n
    counts: list[int] = []
    for state in states:
        part = _coarsened(state.timeline_width, state.timeline, width)
        if len(part) > len(counts):
            counts.extend([0] * (len(part) - len(counts)))
        for i, n in enumerate(part):
            counts[i] += n
    merged.timeline.counts = counts
    return merged
