"""What `polycorn-ctl status` shows, built from one ClusterState (pure: no I/O).

Per node: state, release, workers (ready now / configured / ceiling), heartbeat
age, and a note for what the leader's duties are doing to it (extra workers
granted while others are dead, a drain requested, its step in a rollout). Nodes
the leader declared dead stay listed until they rejoin or are forgotten.
"""

from __future__ import annotations

from polycorn.ha.cluster_state import ClusterState
from polycorn.ha.registry import NodeRecord, record_from_hash
from polycorn.ha.rollout import RolloutRecord, RolloutState, Step


def status_object(cluster: str, view: ClusterState) -> dict:
    lease = view.snap.lease
    rollout = view.rollout
    return {"cluster": cluster, "leader": lease.holder if lease else None,
            "epoch": lease.epoch if lease else None, "highest_epoch": view.snap.epoch,
            "nodes": [node_object(view, r) for r in view.records]
            + [dead_object(view, n) for n in sorted(view.dead) if view.record(n) is None]
            + [lost_object(view, n) for n in sorted(view.lost)
               if view.record(n) is None and n not in view.dead],
            "drained": sorted(view.drained),
            "rollout": rollout.as_json() if rollout and rollout.state is RolloutState.RUNNING
            else None}


def node_object(view: ClusterState, record: NodeRecord) -> dict:
    node_id = record.info.node_id
    grant = view.grants.get(node_id)
    current = grant if grant and grant.incarnation == record.incarnation else None
    return {**record.as_json(view.now_ms), "drain_requested": node_id in view.drained,
            "extra_workers": current.extra if current else 0,
            "covering": list(current.covering) if current and current.extra else []}


def dead_object(view: ClusterState, node_id: str) -> dict:
    dead = view.dead[node_id]
    blank = record_from_hash(node_id, {}, dead.since_ms, view.now_ms, 1)
    return {**blank.as_json(view.now_ms), "heartbeat_age": None,
            "workers_configured": view.roster.get(node_id, 0),
            "drain_requested": node_id in view.drained, "extra_workers": 0, "covering": [],
            "dead_reason": dead.reason, "declared_by": dead.by, "declared_epoch": dead.epoch}


def lost_object(view: ClusterState, node_id: str) -> dict:
    """A node whose agent reported its master gone, before the leader declares it dead:
    shown dead at once rather than missing from the list for that moment."""
    blank = record_from_hash(node_id, {}, 0, view.now_ms, 1)
    return {**blank.as_json(view.now_ms), "heartbeat_age": None,
            "workers_configured": view.roster.get(node_id, 0),
            "drain_requested": node_id in view.drained, "extra_workers": 0, "covering": [],
            "lost_reason": view.lost[node_id]}


def _note(node: dict, rollout: RolloutRecord | None) -> str:
    notes = []
    if node.get("dead_reason"):
        notes.append(f"declared dead at epoch {node['declared_epoch']}: {node['dead_reason']}")
    if node.get("lost_reason"):
        notes.append(f"master gone, not yet declared dead: {node['lost_reason']}")
    if node["extra_workers"]:
        notes.append(f"+{node['extra_workers']} for {', '.join(node['covering'])}")
    if node["drain_requested"] and node["state"] != "draining":
        notes.append("drain requested")
    if rollout is not None and rollout.state is RolloutState.RUNNING:
        entry = rollout.nodes.get(node["node_id"])
        if entry is not None and entry.step is not Step.PENDING:
            notes.append(f"rollout: {entry.step.value}")
    return "; ".join(notes)


def node_table(view: ClusterState, nodes: list[dict]) -> list[str]:
    lease = view.snap.lease
    rows = [("NODE", "STATE", "RELEASE", "WORKERS", "PID", "ADDRESS", "HEARTBEAT", "NOTE")]
    for j in nodes:
        star = " *" if lease and lease.holder == j["node_id"] else ""
        workers = (f"{j['workers']}/{j['workers_configured']}/{j['max_workers']}"
                   if j["alive"] else "-")
        if j["alive"] and j["workers_target"] != j["workers_configured"]:
            workers += f" (target {j['workers_target']})"
        age = "-" if j["heartbeat_age"] is None else f"{j['heartbeat_age']:.1f}s ago"
        rows.append((j["node_id"] + star, j["state"], j["release"] or "-", workers,
                     str(j["pid"] or "-"), j["address"] or "-", age,
                     _note(j, view.rollout)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    return lines + ["(WORKERS: ready now / configured / ceiling)"]


def rollout_line(rollout: RolloutRecord, now_ms: int) -> str:
    """One line summing up a rollout: its state, progress and what is upgrading now."""
    entries = rollout.entries()
    done = sum(1 for e in entries if e.step is Step.DONE)
    parts = [f"rollout {rollout.id} {rollout.state.value}: {done} of {len(entries)} nodes "
             f"done, at most {rollout.max_unavailable} at a time"]
    for e in rollout.in_step(Step.UPGRADING):
        parts.append(f"{e.node_id} upgrading for {max(0, now_ms - e.started_ms) / 1000:.1f}s")
    if rollout.failed_node:
        parts.append(f"halted at {rollout.failed_node}: {rollout.reason}")
    elif rollout.state is RolloutState.ABORTED:
        parts.append(f"aborted: {rollout.reason}")
    return "; ".join(parts)
