"""A node's inbox: take the leader's commands from Redis, fence them, relay them.

Commands wait in a per-node Redis list (queued by the leader through a Lua check
of its lease). The agent pops them each cycle, admits only those for this node,
this incarnation and a current epoch (fencing.py), and relays each admitted verb
to its master over the sidecar channel; the master's `result` is logged as an
event. Rejections are logged as events too (command_rejected_stale, ...).
"""

from __future__ import annotations

import logging

from polycorn.ha import events as ev
from polycorn.ha import history
from polycorn.ha.commands import CommandError, NodeCommand
from polycorn.ha.events import Event
from polycorn.ha.fencing import Fence, FenceVerdict
from polycorn.ha.store import ClusterStore
from polycorn.server import instrument, messages
from polycorn.server.messages import Result
from polycorn.server.sidecar import Channel, ChannelClosed

log = logging.getLogger("polycorn.error.cluster")

MAX_PENDING = 256  # commands relayed and not yet answered; older ones are forgotten


class Inbox:
    def __init__(self, store: ClusterStore, fence: Fence, channel: Channel, node_id: str) -> None:
        self.store = store
        self.fence = fence
        self.channel = channel
        self.node_id = node_id
        self.pending: dict[str, NodeCommand] = {}  # relayed, awaiting the master's result
        self.peer_version: int | None = None  # the master's wire version, once it spoke

    def deliver(self, wires: list[str]) -> None:
        """Fence and relay the commands the agent's cycle took (ClusterStore.cycle_read)."""
        for wire in wires:
            self._deliver(wire)

    def _deliver(self, wire: str) -> None:
        try:
            command = NodeCommand.decode(wire)
        except CommandError as exc:
            self._emit(ev.COMMAND_REJECTED, 0, str(exc), {})
            return
        highest = self.fence.highest_epoch
        decision = self.fence.admit(command)
        history.current().record(
            "command", node=self.node_id, incarnation=self.fence.incarnation, id=command.id,
            cmd=command.cmd, n=command.n, epoch=command.epoch, by=command.issued_by,
            target=command.node_id, highest_before=highest, verdict=decision.verdict.value,
            accepted=decision.admitted)
        details = {"id": command.id, "cmd": command.cmd, "by": command.issued_by}
        if not decision.admitted:
            instrument.current().cluster_count("command_rejected")
        if decision.verdict is FenceVerdict.STALE_EPOCH:
            log.warning("cluster: rejected %s", decision.reason)
            self._emit(ev.COMMAND_REJECTED_STALE, command.epoch, decision.reason,
                       {**details, "highest_epoch": str(self.fence.highest_epoch)})
            return
        if not decision.admitted:
            if decision.verdict is FenceVerdict.REPLAYED:
                log.warning("cluster: rejected %s", decision.reason)
            self._emit(ev.COMMAND_REJECTED, command.epoch, decision.reason, details)
            return
        try:
            self.channel.send(command.to_master().to_wire(messages.speak(self.peer_version)))
        except ChannelClosed:
            return  # the loop sees the EOF and leaves
        instrument.current().cluster_count("command_applied")
        log.info("cluster: relayed %s", decision.reason)
        self.pending[command.id] = command
        if len(self.pending) > MAX_PENDING:
            self.pending.pop(next(iter(self.pending)))

    def result(self, msg: Result) -> None:
        """The master answered a relayed command: log the outcome as an event."""
        command = self.pending.pop(msg.id, None)
        if command is None:
            return
        ok = msg.ok
        self._emit(ev.COMMAND_RESULT, command.epoch, msg.reason,
                   {"id": command.id, "cmd": command.cmd, "ok": "1" if ok else "0",
                    "by": command.issued_by})

    def _emit(self, kind: str, epoch: int, reason: str, extra: dict[str, str]) -> None:
        self.store.emit(Event(kind, self.node_id, epoch, reason,
                              {**extra, "incarnation": str(self.fence.incarnation)}))
