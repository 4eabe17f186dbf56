"""The registry as the front sees it: one FrontNode per node of a ClusterState.

Alive nodes carry their registry state; a member whose heartbeat lapsed is LAPSED
(with how long it has been silent, for the guard); a node the leader declared dead,
or whose agent reported its master gone, is DEAD (their own word: no guard needed).
Addresses are resolved by the caller's resolver; a node whose address cannot be
resolved is kept without one and named in the returned problems.
"""

from __future__ import annotations

from collections.abc import Callable

from polycorn.ha.cluster_state import ClusterState
from polycorn.ha.haproxy.reconcile import FrontNode, Presence
from polycorn.ha.haproxy.resolve import AddressError

Resolve = Callable[[str], tuple[str, int]]


def front_nodes(view: ClusterState, resolve: Resolve) -> tuple[list[FrontNode], dict[str, str]]:
    """(the nodes, node id -> why its address is unusable)."""
    nodes: list[FrontNode] = []
    problems: dict[str, str] = {}
    listed = set()
    for record in view.records:
        info = record.info
        listed.add(info.node_id)
        endpoint = None
        if info.address:
            try:
                endpoint = resolve(info.address)
            except AddressError as exc:
                problems[info.node_id] = str(exc)
        else:
            problems[info.node_id] = "it advertises no address"
        if record.alive:
            presence = Presence(info.state.value)
            silent = 0
        else:
            presence = Presence.LAPSED
            silent = max(0, view.now_ms - record.heartbeat_ms)
        nodes.append(FrontNode(info.node_id, endpoint, presence, info.workers,
                               info.node_id in view.drained, silent))
    for node_id in sorted(set(view.dead) | set(view.lost)):
        if node_id not in listed:
            nodes.append(FrontNode(node_id, None, Presence.DEAD))
    return nodes, problems
