"""Trace files in the Chrome/Perfetto trace-event format, for a sampled set of VPs.

Each sampled VP is a thread (``pid`` = partition, ``tid`` = VP index) whose slices are its
actions; VTL switches, secure intercepts and commits are instant events on it, and a counter
track per VP shows the active VTL. A commit is marked at the start of the action during which
it happened (VTL-entry commits happen before the action runs); an action slice carries its
modelled TDG.VP.RD and TDG.VP.WR. Open the file in https://ui.perfetto.dev or
chrome://tracing. Timestamps are microseconds since the run started (virtual time with
``--clock virtual``, so the trace of a seeded virtual run is reproducible).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, final

import msgspec

from protocol import Intercepted

if TYPE_CHECKING:
    from protocol import Outcome

__all__ = ("VpTrace", "trace_document", "write_trace")

#: Most actions kept per traced VP (later ones are counted as dropped).
EVENTS_PER_VP: Final = 5_000


@final
class VpTrace:
    """The recorded actions of one sampled VP."""

    __slots__ = ("dropped", "events", "last_end", "partition", "vp_index")

    def __init__(self, partition: int, vp_index: int) -> None:
        self.partition = partition
        self.vp_index = vp_index
        self.events: list[tuple[int, int, str, str, int, int, int, int, int, int]] = []
        self.last_end = 0
        self.dropped = 0

    def __repr__(self) -> str:
        return f"<VpTrace partition={self.partition} vp={self.vp_index} events={len(self.events)}>"

    def action(
        self,
        name: str,
        outcome: Outcome,
        start: int,
        end: int,
        vtl: int,
        vtl_after: int,
        commits: int,
        reads: int,
        writes: int,
    ) -> None:
        """Record one action (ns times on the run's clock)."""
        if len(self.events) >= EVENTS_PER_VP:
            self.dropped += 1
            return
        # An open-loop action is measured from its intended start, which may lie before the
        # previous action ended; the slice starts when the VP was free, so slices never overlap.
        begin = max(start, self.last_end)
        self.last_end = end
        message = outcome.message.message_type if type(outcome) is Intercepted else 0
        outcome_name = type(outcome).__name__
        self.events.append(
            (begin, end, name, outcome_name, int(vtl), int(vtl_after), commits, reads, writes, message)
        )


def _us(ns: int) -> float:
    return ns / 1000


def trace_document(traces: list[VpTrace], origin: int, clock: str) -> dict[str, Any]:
    """The trace-event JSON object of ``traces`` (times relative to ``origin``)."""
    events: list[dict[str, Any]] = []
    named: set[int] = set()
    for trace in traces:
        pid, tid = trace.partition, trace.vp_index
        if pid not in named:
            named.add(pid)
            events.append(
                {"ph": "M", "name": "process_name", "pid": pid, "args": {"name": f"partition {pid}"}}
            )
        events.append(
            {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": f"vp {tid}"}}
        )
        counter = f"vp {tid} active VTL"
        previous_vtl = -1
        for begin, end, name, outcome, vtl, vtl_after, commits, reads, writes, message in trace.events:
            ts = _us(begin - origin)
            te = _us(end - origin)
            if vtl != previous_vtl:
                events.append({"ph": "C", "name": counter, "pid": pid, "ts": ts, "args": {"vtl": vtl}})
            events.append(
                {
                    "ph": "X",
                    "name": name,
                    "cat": f"action,VTL{vtl}",
                    "pid": pid,
                    "tid": tid,
                    "ts": ts,
                    "dur": _us(end - begin),
                    "args": {"outcome": outcome, "vtl": f"VTL{vtl}", "tdg_vp_rd": reads, "tdg_vp_wr": writes},
                }
            )
            if commits:
                events.append(
                    {
                        "ph": "i",
                        "s": "t",
                        "name": "commit",
                        "cat": "commit",
                        "pid": pid,
                        "tid": tid,
                        "ts": ts,
                        "args": {"commits": commits, "vmcs_writes": writes},
                    }
                )
            if message:
                events.append(
                    {
                        "ph": "i",
                        "s": "t",
                        "name": "secure intercept",
                        "cat": "intercept",
                        "pid": pid,
                        "tid": tid,
                        "ts": te,
                        "args": {"message_type": f"{message:#010x}"},
                    }
                )
            if vtl_after != vtl:
                events.append(
                    {
                        "ph": "i",
                        "s": "t",
                        "name": f"VTL{vtl} -> VTL{vtl_after}",
                        "cat": "vtl",
                        "pid": pid,
                        "tid": tid,
                        "ts": te,
                        "args": {"by": name},
                    }
                )
                events.append({"ph": "C", "name": counter, "pid": pid, "ts": te, "args": {"vtl": vtl_after}})
            previous_vtl = vtl_after
    dropped = sum(trace.dropped for trace in traces)
    return {
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": {"clock": clock, "vps": len(traces), "dropped_actions": dropped},
    }


def write_trace(path: str | Path, traces: list[VpTrace], origin: int, clock: str) -> None:
    """Write the trace of ``traces`` to ``path`` as JSON."""
    Path(path).write_bytes(msgspec.json.encode(trace_document(traces, origin, clock)))
