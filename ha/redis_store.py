"""ClusterStore over Redis: each method is one Lua script or one transaction.

Every redis-py error that means "could not reach Redis in time" becomes
StoreUnavailable, so callers handle one failure type. After acquiring the lease
the store asks one replica to acknowledge it (WAIT 1 ms) when replicas exist:
Sentinel replication is asynchronous, and a lease lost in a failover would let a
second leader in with the same epoch counter value.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from polycorn.ha import events as ev
from polycorn.ha.cluster_state import ClusterState, DeadNode, Grant
from polycorn.ha.commands import NodeCommand
from polycorn.ha.events import Event
from polycorn.ha.keys import ClusterKeys
from polycorn.ha.lua import SCRIPTS
from polycorn.ha.registry import Departure, NodeInfo, NodeRecord, record_from_hash
from polycorn.ha.rollout import NodeRollout, RolloutRecord
from polycorn.ha.snapshot import ElectionSnapshot, Lease, Member
from polycorn.ha.store import ClusterStore, FinishResult, Heartbeat, IssueResult, StoreUnavailable
from redis.exceptions import RedisError

COMMAND_QUEUE_CAP = 1000  # a node unreachable for long keeps only the newest commands
COMMAND_QUEUE_TTL_MS = 60_000  # an unread queue (dead node, old incarnation) expires
REPLICA_ACK_MS = 500  # WAIT bound after acquiring: well inside the step-down margin
# Seconds between two asks of the Sentinels which server is the master. After a failover
# Sentinel reconfigures the old master only when it next sees it (about 10 s later): until
# then it still takes writes, and a client that keeps its connection to it (redis-py asks
# the Sentinels only when it connects) runs a second cluster there, with a second leader
# and the same epoch numbers (chaos --random 1 found it). Asking every half second bounds
# that window by the Sentinels' own switch (about 1 s) plus this. Reads follow too: a
# reader that only reads (the HAProxy sync) saw the old master's frozen data meanwhile.
FOLLOW_MASTER_EVERY = 0.5

T = TypeVar("T")


def _unavailable(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except RedisError as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except OSError as exc:  # raised by the socket layer under some redis-py paths
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
    return call


class RedisStore(ClusterStore):
    def __init__(self, client: redis.Redis, cluster: str,
                 replica_ack_ms: int = REPLICA_ACK_MS) -> None:
        self.client = client
        self.keys = ClusterKeys(cluster)
        self.replica_ack_ms = replica_ack_ms
        self._scripts = {name: client.register_script(text) for name, text in SCRIPTS.items()}
        self._follow_at = 0.0

    def _follow_master(self) -> None:
        """On a Sentinel target, ask the Sentinels for the master now and then; redis-py
        drops its idle connections to a server that is no longer the master named."""
        pool = self.client.connection_pool
        ask = getattr(pool, "get_master_address", None)
        if ask is None or time.monotonic() < self._follow_at:
            return
        self._follow_at = time.monotonic() + FOLLOW_MASTER_EVERY
        try:
            ask()
        except (RedisError, OSError):
            pass  # the Sentinels do not answer: keep the master we have

    def _run(self, name: str, keys: list[str], args: list) -> object:
        return self._scripts[name](keys=keys, args=args)

    # -- reads ------------------------------------------------------------------------

    @_unavailable
    def snapshot(self, members: bool = True) -> ElectionSnapshot:
        self._follow_master()
        k = self.keys
        if not members:  # one round trip of two commands; MGET reads both keys atomically
            pipe = self.client.pipeline(transaction=False)
            (sec, usec), (lease, epoch) = pipe.time().mget(k.lease, k.epoch).execute()
            return ElectionSnapshot(sec * 1000 + usec // 1000, Lease.decode(lease),
                                    int(epoch or 0), ())
        pipe = self.client.pipeline(transaction=True)
        pipe.time().get(k.lease).get(k.epoch).zrange(k.members, 0, -1, withscores=True)
        (sec, usec), lease, epoch, members = pipe.execute()
        return ElectionSnapshot(sec * 1000 + usec // 1000, Lease.decode(lease), int(epoch or 0),
                               tuple(Member(n, int(s)) for n, s in members))

    @_unavailable
    def nodes(self, ttl_ms: int) -> tuple[ElectionSnapshot, list[NodeRecord]]:
        snap = self.snapshot()
        pipe = self.client.pipeline(transaction=False)
        for m in snap.members:
            pipe.hgetall(self.keys.node(m.node_id))
        hashes = pipe.execute() if snap.members else []
        return snap, [record_from_hash(m.node_id, h, m.heartbeat_ms, snap.now_ms, ttl_ms)
                      for m, h in zip(snap.members, hashes, strict=True)]

    @_unavailable
    def cluster_state(self, ttl_ms: int) -> ClusterState:
        # The HAProxy sync only reads (this and the events): without following it kept
        # reading the old master, frozen at the failover, for the ~10 s until Sentinel
        # reconfigured it, took a heartbeating node out as lapsed and missed a drain
        # (chaos --random 19: 89 HTTP 503 from a drained node HAProxy still sent to).
        self._follow_master()
        k = self.keys
        (now, lease, epoch, flat, hashes, roster, dead, lost, grants, drained, head, entries,
         slots, run_id) = self._run("CLUSTER_STATE", [
             k.lease, k.epoch, k.members, k.roster, k.dead, k.lost, k.grants, k.drained,
             k.rollout, k.rollout_nodes, k.rollout_slots], [k.node("")])
        members = tuple(Member(n, int(float(s))) for n, s in zip(flat[::2], flat[1::2],
                                                                  strict=True))
        snap = ElectionSnapshot(int(now), Lease.decode(lease), int(epoch or 0), members)
        records = tuple(record_from_hash(m.node_id, json.loads(h), m.heartbeat_ms, snap.now_ms,
                                         ttl_ms) for m, h in zip(members, hashes, strict=True))
        roster, dead, lost, grants, head, entries = (
            json.loads(text) for text in (roster, dead, lost, grants, head, entries))
        return ClusterState(
            snap, records, {n: int(w) for n, w in roster.items()},
            {n: DeadNode.decode(n, text) for n, text in dead.items()}, dict(lost),
            {n: g for n, text in grants.items() if (g := Grant.decode(text)) is not None},
            frozenset(drained), RolloutRecord.from_hashes(head, entries, set(slots)),
            str(run_id))

    @_unavailable
    def read_events(self, after: str = "0", count: int = 100,
                    block_ms: int | None = None) -> list[Event]:
        self._follow_master()
        if block_ms is None:
            entries = self.client.xrange(self.keys.events, min=f"({after}" if after != "0"
                                         else "-", count=count)
        else:
            reply = self.client.xread({self.keys.events: after}, count=count, block=block_ms)
            entries = reply[0][1] if reply else []
        return [Event.from_stream(eid, fields) for eid, fields in entries]

    # -- lease ------------------------------------------------------------------------

    @_unavailable
    def acquire_lease(self, node_id: str, lease_ms: int, reason: str,
                      seen_epoch: int = 0) -> int | None:
        k = self.keys
        epoch = self._run("ACQUIRE_LEASE", [k.lease, k.epoch, k.events],
                          [node_id, lease_ms, ev.STREAM_MAXLEN, reason, seen_epoch])
        if epoch is None:
            return None
        if not self._replicated():
            # Not confirmed by a replica: a failover now could lose it. Give it back
            # rather than lead on a lease that may vanish.
            self._run("RESIGN_LEASE", [k.lease, k.events],
                      [Lease(node_id, int(epoch)).encode(), node_id, epoch,
                       "no replica acknowledged the lease", ev.STREAM_MAXLEN])
            return None
        return int(epoch)

    def _replicated(self) -> bool:
        """True when there is no replica to wait for, or one acknowledged in time.
        Only replicas in state "online" count: one still in its initial sync cannot
        acknowledge, and waiting on it would refuse every lease for seconds."""
        info = self.client.info("replication")
        online = sum(1 for key, value in info.items()
                     if key.startswith("slave") and isinstance(value, dict)
                     and value.get("state") == "online")
        if online == 0:
            return True
        return int(self.client.execute_command("WAIT", 1, self.replica_ack_ms)) >= 1

    @_unavailable
    def renew_lease(self, lease: Lease, lease_ms: int) -> bool:
        return self._run("RENEW_LEASE", [self.keys.lease], [lease.encode(), lease_ms]) == 1

    @_unavailable
    def resign_lease(self, lease: Lease, reason: str) -> bool:
        k = self.keys
        return self._run("RESIGN_LEASE", [k.lease, k.events],
                         [lease.encode(), lease.holder, lease.epoch, reason,
                          ev.STREAM_MAXLEN]) == 1

    # -- registry ---------------------------------------------------------------------

    def _node_keys(self, node_id: str) -> list[str]:
        k = self.keys
        return [k.incarnations, k.node(node_id), k.members, k.events]

    @staticmethod
    def _roster_workers(info: NodeInfo) -> int:
        return info.workers_configured if info.state.value == "ready" else 0

    @staticmethod
    def _pairs(info: NodeInfo) -> list[str]:
        fields = info.to_hash()
        fields.pop("state")
        return [x for item in fields.items() for x in item]

    @_unavailable
    def register(self, info: NodeInfo, ttl_ms: int) -> int:
        return int(self._run("REGISTER", [*self._node_keys(info.node_id), self.keys.dead,
                                          self.keys.lost, self.keys.roster],
                             [info.node_id, ttl_ms, ev.STREAM_MAXLEN, self._roster_workers(info),
                              "state", info.state.value,
                              *self._pairs(info)]))

    @_unavailable
    def heartbeat(self, info: NodeInfo, incarnation: int, ttl_ms: int) -> Heartbeat:
        self._follow_master()
        reply = self._run("HEARTBEAT", [*self._node_keys(info.node_id), self.keys.dead,
                                        self.keys.roster],
                          [info.node_id, incarnation, ttl_ms, ev.STREAM_MAXLEN,
                           info.state.value, self._roster_workers(info), *self._pairs(info)])
        return Heartbeat(reply)

    @_unavailable
    def deregister(self, node_id: str, incarnation: int, kind: str, reason: str,
                   departure: Departure = Departure.LEFT) -> bool:
        k = self.keys
        return self._run("DEREGISTER",
                         [*self._node_keys(node_id), k.commands(node_id, incarnation), k.roster,
                          k.lost, k.grants],
                         [node_id, incarnation, kind, reason, ev.STREAM_MAXLEN,
                          departure.value]) == 1

    # -- fenced leader actions --------------------------------------------------------

    @_unavailable
    def declare_dead(self, lease: Lease, node_id: str, ttl_ms: int, reason: str) -> bool:
        k = self.keys
        return self._run("DECLARE_DEAD", [k.lease, k.members, k.node(node_id), k.events,
                                          k.dead, k.lost, k.grants],
                         [lease.encode(), node_id, ttl_ms, lease.epoch, lease.holder, reason,
                          ev.STREAM_MAXLEN]) == 1

    @_unavailable
    def send_command(self, lease: Lease, command: NodeCommand) -> bool:
        if command.epoch != lease.epoch:
            return False
        queue = self.keys.commands(command.node_id, command.incarnation)
        return self._run("SEND_COMMAND", [self.keys.lease, queue],
                         [lease.encode(), command.encode(), COMMAND_QUEUE_CAP,
                          COMMAND_QUEUE_TTL_MS]) == 1

    @_unavailable
    def grant_workers(self, lease: Lease, node_id: str, grant: Grant | None,
                      command: NodeCommand | None, event_kind: str, reason: str) -> bool:
        k = self.keys
        incarnation = command.incarnation if command else 0
        return self._run("GRANT_WORKERS", [k.lease, k.grants, k.commands(node_id, incarnation),
                                           k.events],
                         [lease.encode(), node_id, grant.encode() if grant else "",
                          command.encode() if command else "", COMMAND_QUEUE_CAP,
                          COMMAND_QUEUE_TTL_MS, event_kind, lease.epoch, lease.holder, reason,
                          ev.STREAM_MAXLEN, command.n if command and command.n is not None
                          else ""]) == 1

    @_unavailable
    def issue_upgrade(self, lease: Lease, rollout_id: str, entry: NodeRollout,
                      command: NodeCommand, reason: str) -> IssueResult:
        k = self.keys
        reply = self._run("ISSUE_UPGRADE", [k.lease, k.rollout, k.rollout_nodes, k.rollout_slots,
                                            k.commands(command.node_id, command.incarnation),
                                            k.events],
                          [lease.encode(), rollout_id, entry.node_id, entry.encode(),
                           command.encode(), COMMAND_QUEUE_CAP, COMMAND_QUEUE_TTL_MS,
                           lease.epoch, lease.holder, ev.STREAM_MAXLEN, reason])
        return IssueResult(reply)

    @_unavailable
    def finish_upgrade(self, lease: Lease, rollout_id: str, entry: NodeRollout,
                       reason: str) -> FinishResult:
        k = self.keys
        reply = self._run("FINISH_UPGRADE", [k.lease, k.rollout, k.rollout_nodes,
                                             k.rollout_slots, k.events],
                          [lease.encode(), rollout_id, entry.node_id, entry.encode(),
                           entry.step.value, lease.epoch, lease.holder, reason,
                           ev.STREAM_MAXLEN])
        return FinishResult(reply)

    # -- operator requests ------------------------------------------------------------

    @_unavailable
    def create_rollout(self, rollout: RolloutRecord, reason: str) -> tuple[bool, str]:
        k = self.keys
        head = {f: v for f, v in rollout.to_hash().items() if f != "created_ms"}
        head_args = [x for item in head.items() for x in item]
        node_args = [x for e in rollout.entries() for x in (e.node_id, e.encode())]
        created, rollout_id = self._run(
            "CREATE_ROLLOUT", [k.rollout, k.rollout_nodes, k.rollout_slots, k.events],
            [ev.STREAM_MAXLEN, rollout.id, reason, len(head_args), *head_args, *node_args])
        return bool(created), str(rollout_id)

    @_unavailable
    def abort_rollout(self, reason: str) -> str | None:
        k = self.keys
        return self._run("ABORT_ROLLOUT", [k.rollout, k.rollout_slots, k.events],
                         [reason, ev.STREAM_MAXLEN]) or None

    @_unavailable
    def set_drained(self, node_id: str, drained: bool, reason: str) -> bool:
        k = self.keys
        kind = ev.DRAIN_REQUESTED if drained else ev.UNDRAIN_REQUESTED
        pipe = self.client.pipeline(transaction=True)
        (pipe.sadd if drained else pipe.srem)(k.drained, node_id)
        pipe.xadd(k.events, Event(kind, node_id, 0, reason).fields(),
                  maxlen=ev.STREAM_MAXLEN, approximate=True)
        changed, _ = pipe.execute()
        return bool(changed)

    @_unavailable
    def forget_node(self, node_id: str, reason: str) -> bool:
        k = self.keys
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(k.roster, node_id).hdel(k.dead, node_id).hdel(k.lost, node_id)
        pipe.hdel(k.grants, node_id).srem(k.drained, node_id)
        pipe.xadd(k.events, Event(ev.NODE_FORGOTTEN, node_id, 0, reason).fields(),
                  maxlen=ev.STREAM_MAXLEN, approximate=True)
        return any(pipe.execute()[:5])

    # -- inbox and events -------------------------------------------------------------

    @_unavailable
    def take_commands(self, node_id: str, incarnation: int, limit: int = 16) -> list[str]:
        return self.client.lpop(self.keys.commands(node_id, incarnation), limit) or []

    @_unavailable
    def cycle_read(self, node_id: str, incarnation: int, limit: int = 16
                   ) -> tuple[ElectionSnapshot, list[str]]:
        k = self.keys
        now, lease, epoch, wires, run_id = self._run(
            "CYCLE_READ", [k.lease, k.epoch, k.commands(node_id, incarnation)], [limit])
        return (ElectionSnapshot(int(now), Lease.decode(lease), int(epoch or 0), (),
                                 str(run_id)), list(wires))

    @_unavailable
    def latest_events(self, count: int) -> list[Event]:
        self._follow_master()
        if count <= 0:
            return []
        entries = self.client.xrevrange(self.keys.events, count=count)
        return [Event.from_stream(eid, fields) for eid, fields in reversed(entries)]

    @_unavailable
    def emit(self, event: Event) -> None:
        self.client.xadd(self.keys.events, event.fields(), maxlen=ev.STREAM_MAXLEN,
                         approximate=True)

    def close(self) -> None:
        self.client.close()
