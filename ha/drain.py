"""Drain requests: the operator's wish in Redis, carried out by the leader.

`polycorn-ctl drain NODE` only adds the node to the drained set; each cycle the
leader compares that set with what the nodes report and sends a fenced `drain`
(or `undrain`) to any node that does not match yet. Desired state rather than a
one-shot command: a node that restarts or upgrades comes back ready and is
drained again, and a command lost with a leader is simply sent again.
"""

from __future__ import annotations

from polycorn.ha.cluster_state import ClusterState
from polycorn.ha.commands import NodeCommand
from polycorn.ha.registry import NodeState
from polycorn.ha.snapshot import Lease
from polycorn.ha.store import ClusterStore

RESEND_MS = 3000  # a node that does not report the change by then gets the command again


class DrainDuty:
    def __init__(self, store: ClusterStore) -> None:
        self.store = store
        self.sent: dict[tuple[str, int, str], int] = {}  # (node, incarnation, verb) -> ms

    def forget(self) -> None:
        self.sent.clear()

    def cycle(self, view: ClusterState, lease: Lease) -> str | None:
        said = []
        for record in view.alive():
            node_id, state = record.info.node_id, record.info.state
            if node_id in view.drained and state is NodeState.READY:
                verb = "drain"
            elif node_id not in view.drained and state is NodeState.DRAINING:
                verb = "undrain"
            else:
                continue
            key = (node_id, record.incarnation, verb)
            if view.now_ms - self.sent.get(key, -RESEND_MS) < RESEND_MS:
                continue
            command = NodeCommand(node_id, record.incarnation, lease.epoch, verb,
                                  issued_by=lease.holder)
            if self.store.send_command(lease, command):
                self.sent[key] = view.now_ms
                said.append(f"{verb} {node_id}")
        live = {(r.info.node_id, r.incarnation) for r in view.alive()}
        self.sent = {k: t for k, t in self.sent.items() if k[:2] in live}
        return f"sent {', '.join(said)} (requested by the operator)" if said else None
