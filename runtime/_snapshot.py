"""Partition snapshots: the versioned bytes ``partition.snapshot()`` writes and ``restore_partition`` reads.

Layout: one header line ``tdvsm-partition-snapshot <version> <sha256 of the payload>``, then
the payload, the msgspec JSON encoding of ``PartitionSnapshot`` (JSON because register values
are up to 128 bits wide, which msgpack cannot carry). It holds all partition state: the
configuration, the supervisor's VSM partition state and protections, and per VP both VTLs'
registers (committed and staged), counters, SynIC slot, VP-assist VTL control, VTL1 state,
pending event and control messages not applied yet. Derived state (the modelled VMCS, the
published view) is recomputed on restore.

Reading is strict: a wrong header, version or digest, a payload that does not decode to the
typed Structs, or a state that breaks the partition's invariants raises ``ProtocolError`` (a
``ValueError``) and nothing is created.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Final

import msgspec

from actors import (
    PartitionConfig,
    PartitionStateSnapshot,
    VpSnapshot,
    restore_partition_state,
    restore_vp,
    snapshot_partition_state,
    snapshot_vp,
    vp_violations,
)
from actors._registers import PRIVATE_RESET, SHARED_RESET
from protocol import ProtocolError, ProtocolErrorCode

if TYPE_CHECKING:
    from actors import PartitionSupervisor, VpActor

    from ._cells import PartitionCells

__all__ = ("SNAPSHOT_VERSION", "PartitionSnapshot", "decode_partition", "encode_partition", "restore_actors")

_MAGIC: Final = b"tdvsm-partition-snapshot"
SNAPSHOT_VERSION: Final = 1
_U128: Final = 1 << 128


class PartitionSnapshot(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The payload of a partition snapshot (version ``SNAPSHOT_VERSION``)."""

    version: int
    partition_id: int  # of the partition it was taken from (restore gives a new id)
    config: PartitionConfig
    supervisor: PartitionStateSnapshot
    vps: list[VpSnapshot]


_DECODER: Final = msgspec.json.Decoder(PartitionSnapshot)


def encode_partition(cells: PartitionCells) -> bytes:
    """The snapshot bytes of ``cells`` as they are now (the caller commits first)."""
    payload = msgspec.json.encode(
        PartitionSnapshot(
            version=SNAPSHOT_VERSION,
            partition_id=cells.partition_id,
            config=cells.config,
            supervisor=snapshot_partition_state(cells.supervisor),
            vps=[snapshot_vp(cell.actor) for cell in cells.cells],
        )
    )
    digest = hashlib.sha256(payload).hexdigest().encode()
    return b"%s %d %s\n%s" % (_MAGIC, SNAPSHOT_VERSION, digest, payload)


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ProtocolErrorCode.VALIDATION, f"not a tdvsm partition snapshot: {message}")


def decode_partition(data: object) -> PartitionSnapshot:
    """Check and decode snapshot bytes.

    Raises:
        ProtocolError: the data is damaged, foreign or of another version (a ValueError).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        msg = f"restore_partition takes the bytes partition.snapshot() returned, got {type(data).__name__}"
        raise TypeError(msg)
    data = bytes(data)
    header, newline, payload = data.partition(b"\n")
    words = header.split(b" ")
    if not newline or len(words) != 3 or words[0] != _MAGIC:
        raise _bad("no snapshot header")
    if words[1] != str(SNAPSHOT_VERSION).encode():
        raise _bad(f"version {words[1][:16]!r}, this tdvsm reads version {SNAPSHOT_VERSION}")
    if hashlib.sha256(payload).hexdigest().encode() != words[2]:
        raise _bad("the payload does not match its sha256 (damaged data)")
    try:
        snapshot = _DECODER.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise _bad(str(exc)) from exc
    problems = _problems(snapshot)
    if problems:
        raise _bad("; ".join(problems[:5]))
    return snapshot


def _problems(snapshot: PartitionSnapshot) -> list[str]:
    """What makes ``snapshot`` impossible as a partition state (before building anything)."""
    problems: list[str] = []
    config = snapshot.config
    count = config.vp_count
    if snapshot.version != SNAPSHOT_VERSION:
        problems.append(f"payload version {snapshot.version}")
    if len(snapshot.vps) != count:
        problems.append(f"{len(snapshot.vps)} VPs for vp_count {count}")
    supervisor = snapshot.supervisor
    if len(supervisor.vtl1_enable_called) != count or len(supervisor.started) != count:
        problems.append("partition VP tables do not match vp_count")
    for gpn, flags in supervisor.protections.items():
        if not 0 <= gpn < 1 << 52 or not 0 <= flags <= 0xFFFF:
            problems.append(f"protection {gpn:#x}: {flags:#x}")
    for i, vp in enumerate(snapshot.vps):
        state = vp.state
        if state.index != i:
            problems.append(f"VP {i} claims index {state.index}")
        if state.active_vtl not in (0, 1) or (state.active_vtl == 1 and state.vtl1 is None):
            problems.append(f"vp {i}: active VTL{state.active_vtl} without VTL1 state")
        if state.vtl1 is not None and i < len(supervisor.vtl1_enable_called):
            if not supervisor.vtl1_enable_called[i]:
                problems.append(f"vp {i}: VTL1 state but VTL1 was never enabled on it")
        files = [("shared", state.shared, SHARED_RESET)]
        files += [(f"VTL{v}", vtl.regs, PRIVATE_RESET) for v, vtl in enumerate(state.vtls)]
        for name, regs, reset in files:
            for register, value in (*regs.committed.items(), *regs.staged.items()):
                if register not in reset or not 0 <= value < _U128:
                    problems.append(f"vp {i} {name}: register {register:#x} = {value:#x}")
    return problems


def restore_actors(
    snapshot: PartitionSnapshot, partition_id: int
) -> tuple[PartitionSupervisor, list[VpActor]]:
    """The supervisor and VP actors of ``snapshot`` for a new partition ``partition_id``.

    Raises:
        ProtocolError: the state breaks an invariant of DOMAIN section 5 (a forged snapshot).
    """
    supervisor = restore_partition_state(snapshot.supervisor, partition_id, snapshot.config)
    actors = [restore_vp(vp, snapshot.config, supervisor.view) for vp in snapshot.vps]
    problems = [problem for actor in actors for problem in vp_violations(actor.state)]
    if problems:
        raise _bad("; ".join(problems[:5]))
    return supervisor, actors
