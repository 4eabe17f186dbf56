"""polycorn-ctl's requests to the leader: drain, undrain, forget, upgrade, rollout.

polycorn-ctl holds no lease, so it never commands a node itself: it writes the
operator's wish into Redis (a drain request, a rollout record) and the elected
leader carries it out with its fenced commands. `--wait` (and drain/undrain by
default) then watch the registry until the wish is reality, printing one line
per change, and exit 0 when it is, 5 when it failed or did not happen in time.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import uuid

from polycorn.ha.cluster_state import ClusterState
from polycorn.ha.ctl.common import (
    EXIT_BUSY,
    EXIT_EMPTY,
    EXIT_OK,
    EXIT_UNFINISHED,
    EXIT_USAGE,
    CtlError,
    requester,
)
from polycorn.ha.ctl.status import rollout_line
from polycorn.ha.registry import NodeState
from polycorn.ha.rollout import NodeRollout, RolloutRecord, RolloutState, Step
from polycorn.ha.store import ClusterStore, StoreUnavailable

POLL = 0.2  # seconds between two looks at the registry while waiting
WAIT_MARGIN = 60.0  # seconds a rollout wait allows beyond its nodes' own timeouts


def _view(args: argparse.Namespace, store: ClusterStore) -> ClusterState:
    return store.cluster_state(int(args.node_ttl * 1000))


def _live_node(view: ClusterState, node_id: str, cluster: str):
    record = view.record(node_id)
    if record is None or not record.alive:
        live = ", ".join(sorted(r.info.node_id for r in view.alive())) or "none"
        raise CtlError(f"no live node {node_id!r} in cluster {cluster!r} (live: {live})",
                          EXIT_USAGE)
    return record


# -- drain, undrain, forget ----------------------------------------------------------------


def cmd_drain(args: argparse.Namespace, store: ClusterStore) -> int:
    drain = args.command == "drain"
    alive = request_drain(_view(args, store), store, args.cluster, args.node, drain,
                          requester())
    if not alive:
        print(f"{args.node} is not alive: its drain request is withdrawn, and it comes back "
              f"ready")
        return EXIT_OK
    want = NodeState.DRAINING if drain else NodeState.READY
    if args.no_wait:
        print(f"{args.command} of {args.node} requested; the leader carries it out")
        return EXIT_OK
    deadline = time.monotonic() + args.timeout
    while True:
        view = _view(args, store)
        record = view.record(args.node)
        if record is not None and record.alive and record.info.state is want:
            break
        if (args.node in view.drained) is not drain:
            # The request is gone: Redis acknowledged it, then a Sentinel failover
            # promoted a replica that never got it (replication is asynchronous; chaos
            # --random 1 lost an undrain so). Desired state is safe to write again.
            store.set_drained(args.node, drain, f"requested by {requester()} (again: the "
                                                f"first request was lost)")
            print(f"polycorn-ctl: the {args.command} request of {args.node} was lost (a "
                  f"Redis failover?); written again", file=sys.stderr)
        if time.monotonic() > deadline:
            state = record.info.state.value if record and record.alive else "not alive"
            raise CtlError(f"{args.node} still reports {state} after {args.timeout:g}s "
                              f"(is there a leader? polycorn-ctl leader)", EXIT_UNFINISHED)
        time.sleep(POLL)
    if drain:
        print(f"{args.node} is draining: its health path answers 503 and it keeps serving "
              f"what it is sent")
    else:
        print(f"{args.node} is ready again")
    return EXIT_OK


def request_drain(view: ClusterState, store: ClusterStore, cluster: str, node_id: str,
                  drain: bool, who: str) -> bool:
    """Record a drain (or undrain) of a live node for the leader to carry out; whether the
    node is alive. An undrain also withdraws the request of a node that is down now: the
    drained set is a wish the leader applies when the node comes back, and an operator
    who drained a node that then died must be able to take it back (chaos --random 4:
    the undrain of a node killed meanwhile was refused, and the node came back drained)."""
    record = view.record(node_id)
    if drain or node_id not in view.drained or (record is not None and record.alive):
        _live_node(view, node_id, cluster)
        store.set_drained(node_id, drain, f"requested by {who}")
        return True
    store.set_drained(node_id, False, f"requested by {who} (the node is not alive)")
    return False


def cmd_forget(args: argparse.Namespace, store: ClusterStore) -> int:
    view = _view(args, store)
    record = view.record(args.node)
    if record is not None and record.alive:
        raise CtlError(f"{args.node} is alive: stop it first (only a node that is gone "
                          f"for good is forgotten)", EXIT_USAGE)
    if not store.forget_node(args.node, f"requested by {requester()}"):
        raise CtlError(f"nothing is known of {args.node!r}", EXIT_EMPTY)
    print(f"forgot {args.node}: its capacity is no longer owed")
    return EXIT_OK


# -- rolling upgrades ---------------------------------------------------------------------


def cmd_upgrade(args: argparse.Namespace, store: ClusterStore) -> int:
    if args.abort:
        aborted = store.abort_rollout(f"aborted by {requester()}")
        if aborted is None:
            raise CtlError("no rollout is running", EXIT_EMPTY)
        print(f"rollout {aborted} aborted: no further node starts (one upgrading now "
              f"finishes on its own)")
        return EXIT_OK
    if args.max_unavailable < 1:  # a usage error before Redis is asked anything
        raise CtlError("--max-unavailable must be at least 1", EXIT_USAGE)
    wanted = [n for spec in args.nodes or [] for n in spec.split(",") if n]
    rollout = plan_rollout(_view(args, store), args.cluster, wanted, args.max_unavailable,
                           args.timeout, requester())
    order = rollout.order
    created, rollout_id = store.create_rollout(rollout, f"requested by {requester()}")
    if not created:
        raise CtlError(f"rollout {rollout_id} is already running: wait for it, or stop it "
                          f"with polycorn-ctl upgrade --abort", EXIT_BUSY)
    print(f"rollout {rollout_id}: upgrading {len(order)} nodes ({', '.join(order)}), at most "
          f"{args.max_unavailable} at a time, {args.timeout:g}s per node", flush=True)
    if not args.wait:
        print("follow it with: polycorn-ctl rollout")
        return EXIT_OK
    waves = math.ceil(len(order) / args.max_unavailable)
    return follow_rollout(args, store, rollout_id, args.timeout * waves + WAIT_MARGIN)


def plan_rollout(view: ClusterState, cluster: str, wanted: list[str], max_unavailable: int,
                 timeout: float, who: str) -> RolloutRecord:
    """The rollout record to ask for: the wanted live nodes in that order, or every live
    node by id. Also used by the dashboard's upgrade button."""
    if max_unavailable < 1:
        raise CtlError("--max-unavailable must be at least 1", EXIT_USAGE)
    records = ([_live_node(view, n, cluster) for n in dict.fromkeys(wanted)] if wanted
               else sorted(view.alive(), key=lambda r: r.info.node_id))
    if not records:
        raise CtlError(f"cluster {cluster!r} has no live nodes to upgrade", EXIT_EMPTY)
    return RolloutRecord(uuid.uuid4().hex[:8], RolloutState.RUNNING, max_unavailable,
                         timeout, tuple(r.info.node_id for r in records),
                         {r.info.node_id: NodeRollout(r.info.node_id, old_release=r.info.release,
                                                      old_incarnation=r.incarnation,
                                                      old_pid=r.info.pid) for r in records},
                         requested_by=who)


def follow_rollout(args: argparse.Namespace, store: ClusterStore, rollout_id: str,
                   patience: float) -> int:
    """Print each node's progress until the rollout ends; its exit status."""
    deadline = time.monotonic() + patience
    shown: dict[str, Step] = {}
    while True:
        try:
            rollout = _view(args, store).rollout
        except StoreUnavailable as exc:  # a Redis blip must not abandon the watch
            rollout = None
            if time.monotonic() > deadline:
                raise
            print(f"(Redis unavailable: {exc}; still waiting)", flush=True)
        if rollout is not None:
            if rollout.id != rollout_id:
                raise CtlError(f"rollout {rollout_id} was replaced by {rollout.id}",
                                  EXIT_UNFINISHED)
            changed = [e for e in rollout.entries()
                       if shown.get(e.node_id, Step.PENDING) is not e.step]
            # in the order they happened, when one poll sees several changes
            for entry in sorted(changed, key=lambda e: e.finished_ms or e.started_ms):
                shown[entry.node_id] = entry.step
                print(progress_line(entry), flush=True)
            if rollout.state is not RolloutState.RUNNING:
                return final_report(rollout)
        if time.monotonic() > deadline:
            raise CtlError(f"gave up waiting after {patience:g}s: rollout {rollout_id} is "
                              f"still running (polycorn-ctl rollout)", EXIT_UNFINISHED)
        time.sleep(POLL)


def progress_line(entry: NodeRollout) -> str:
    if entry.step is Step.UPGRADING:
        return (f"{entry.node_id}: upgrading from {entry.old_release or '?'} "
                f"(pid {entry.old_pid}, incarnation {entry.old_incarnation})")
    if entry.step is Step.DONE:
        return (f"{entry.node_id}: done in {entry.took():.1f}s, {entry.old_release or '?'} -> "
                f"{entry.new_release or '?'} (pid {entry.new_pid}, incarnation "
                f"{entry.new_incarnation})")
    if entry.step is Step.FAILED:
        return f"{entry.node_id}: FAILED after {entry.took():.1f}s: {entry.reason}"
    return f"{entry.node_id}: pending"


def final_report(rollout: RolloutRecord) -> int:
    took = max(0, rollout.finished_ms - rollout.created_ms) / 1000
    print(f"rollout {rollout.id} {rollout.state.value} in {took:.1f}s")
    for line in rollout_table(rollout):
        print(line)
    if rollout.state is RolloutState.DONE:
        return EXIT_OK
    where = f" at {rollout.failed_node}" if rollout.failed_node else ""
    raise CtlError(f"rollout {rollout.id} {rollout.state.value}{where}: {rollout.reason}",
                      EXIT_UNFINISHED)


def rollout_table(rollout: RolloutRecord) -> list[str]:
    rows = [("NODE", "RESULT", "OLD RELEASE", "NEW RELEASE", "SECONDS", "REASON")]
    for e in rollout.entries():
        rows.append((e.node_id, e.step.value, e.old_release or "-", e.new_release or "-",
                     f"{e.took():.1f}" if e.finished_ms else "-",
                     e.reason if e.step is Step.FAILED else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def cmd_rollout(args: argparse.Namespace, store: ClusterStore) -> int:
    view = _view(args, store)
    rollout = view.rollout
    if rollout is None:
        raise CtlError(f"cluster {args.cluster!r} has had no rollout", EXIT_EMPTY)
    if args.json:
        print(json.dumps(rollout.as_json()))
    else:
        print(rollout_line(rollout, view.now_ms))
        print("\n".join(rollout_table(rollout)))
    return EXIT_OK
