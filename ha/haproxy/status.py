"""What `polycorn-ctl haproxy status` shows (pure): HAProxy's view of each slot beside
the registry's view of the node at its address, and the registry's nodes with no slot.

A slot and a node meet by address (the IP and port the sync set), so the table is
right even when no sync runs, and shows what a sync would have to fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from polycorn.ha.haproxy.reconcile import PLACEHOLDER, FrontNode, Presence
from polycorn.ha.haproxy.servers import Admin, ServerState


def _addr(endpoint: tuple[str, int]) -> str:
    ip, port = endpoint
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def status_rows(servers: Sequence[ServerState], stats: Mapping[str, Mapping[str, str]],
                nodes: Sequence[FrontNode]) -> list[dict]:
    """One row per used slot, then one per registry node without a slot."""
    by_endpoint = {n.endpoint: n for n in nodes if n.endpoint is not None}
    rows, seen = [], set()
    for s in servers:
        node = by_endpoint.get(s.endpoint)
        if s.endpoint == PLACEHOLDER and node is None:
            continue  # an unused slot
        stat = stats.get(s.name, {})
        # HAProxy prefixes the last check's result with "* " while the next check is
        # running: the row gives the result, and that a check runs apart.
        check = stat.get("check_status", "")
        running = check.startswith("* ")
        rows.append({
            "slot": s.name, "address": _addr(s.endpoint), "admin": s.admin.value,
            "status": stat.get("status") or s.op, "weight": s.weight,
            "check": check[2:] if running else check, "check_running": running,
            "check_ms": stat.get("check_duration", ""),
            "node": node.node_id if node else None,
            "registry": _registry_state(node), "workers": node.workers if node else None,
            "in_step": _in_step(s, node)})
        if node is not None:
            seen.add(node.node_id)
    for n in nodes:
        if n.node_id not in seen:
            rows.append({"slot": None, "address": _addr(n.endpoint) if n.endpoint else None,
                         "admin": None, "status": None, "weight": None, "check": "",
                         "check_running": False, "check_ms": "", "node": n.node_id, "registry": _registry_state(n),
                         "workers": n.workers, "in_step": n.presence not in (
                             Presence.READY, Presence.DRAINING, Presence.UPGRADING)})
    return rows


def _registry_state(node: FrontNode | None) -> str:
    if node is None:
        return "absent"
    if node.drained and node.presence is Presence.READY:
        return "ready (drain requested)"
    return node.presence.value


def _in_step(s: ServerState, node: FrontNode | None) -> bool:
    """Does the slot's admin state agree with the registry (what the sync converges to)?"""
    if node is None:
        return s.admin is Admin.MAINT
    want = {Presence.READY: Admin.DRAIN if node.drained else Admin.READY,
            Presence.DRAINING: Admin.DRAIN}.get(node.presence, Admin.MAINT)
    if node.presence is Presence.UPGRADING or (node.presence is Presence.BOOTING
                                               and s.admin is not Admin.MAINT):
        return True  # left as it was on purpose
    return s.admin is want


def status_table(rows: Sequence[dict]) -> list[str]:
    head = ("SLOT", "ADDRESS", "HAPROXY", "WEIGHT", "CHECK", "NODE", "REGISTRY", "WORKERS", "")
    table = [head]
    for r in rows:
        haproxy = "-" if r["admin"] is None else (
            r["status"] if r["admin"] == "ready" else f"{r['admin']} ({r['status']})")
        check = r["check"] + (f" {r['check_ms']}ms" if r["check"] and r["check_ms"] else "")
        table.append((r["slot"] or "-", r["address"] or "-", haproxy,
                      "-" if r["weight"] is None else str(r["weight"]), check or "-",
                      r["node"] or "-", r["registry"],
                      "-" if r["workers"] is None else str(r["workers"]),
                      "" if r["in_step"] else "(out of step)"))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in table]
